#!/usr/bin/env python3
"""Journal-device benchmark: one table comparing, in one run, 4 KiB writes each followed by
fdatasync and sequential 1 MiB writes on a journal device in flush mode, one in close mode, a raw
image on the same mount, a file on the native backing disk and a file on tmpfs; 8 journal devices
flushing at once (group commit) against one; ext4 metadata work on a loop device with its
internal journal against its journal on a vmfuse journal device; and the store's overhead.

Usage: journal_bench.py WORKDIR MOUNTPOINT STORE TMPFS   (run by scripts/bench-journal.sh as root)
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from mount_bench import sh, drop_caches  # noqa: E402

MiB = 1 << 20
RUNTIME = os.environ.get("BENCH_RUNTIME", "5")


def fio_json(*args):
    out = sh("fio", "--output-format=json", "--percentile_list=99", *args, timeout=900).stdout
    return json.loads(out[out.index("{"):])


def sync_writes(path, jobs=1):
    """4 KiB random writes, each followed by fdatasync: IOPS (all jobs) and p99 (write + sync), ms."""
    where = [f"--filename={path}"] if jobs == 1 else [
        f"--filename_format={path}$jobnum", f"--numjobs={jobs}", "--group_reporting"]
    d = fio_json("--name=s", *where, "--size=64M", "--rw=randwrite", "--bs=4k", "--ioengine=psync",
                 "--fdatasync=1", "--time_based", f"--runtime={RUNTIME}")
    job = d["jobs"][0]
    w = job["write"]
    p99 = (w["clat_ns"]["percentile"].get("99.000000", 0) + job["sync"]["lat_ns"]["percentile"].get("99.000000", 0)) / 1e6
    return w["iops"], p99


def seq_write(path):
    d = fio_json("--name=q", f"--filename={path}", "--size=512M", "--rw=write", "--bs=1M", "--ioengine=psync",
                 "--end_fsync=1")
    w = d["jobs"][0]["write"]
    return w["bw_bytes"] / MiB, w["clat_ns"]["percentile"].get("99.000000", 0) / 1e6


def main():
    work, mnt, store, tmpfs = sys.argv[1:5]
    j = os.path.join(mnt, "journals")
    sh("bin/vmfuse", "journal", "create", "--size", "1G", "jflush", mnt)
    sh("bin/vmfuse", "journal", "create", "--size", "1G", "--durability", "close", "jclose", mnt)
    sh("truncate", "-s", "1G", os.path.join(mnt, "images", "raw.img"))
    targets = [("journal flush", os.path.join(j, "jflush")), ("journal close", os.path.join(j, "jclose")),
               ("vmfuse raw image", os.path.join(mnt, "images", "raw.img")),
               ("native disk file", os.path.join(work, "native.img")), ("tmpfs file", os.path.join(tmpfs, "t.img"))]
    rows = []
    for name, path in targets:
        drop_caches()
        iops, p99 = sync_writes(path)
        rows.append(("4K write+fdatasync", name, iops, "IOPS", p99))
    for name, path in targets:
        drop_caches()
        mib, p99 = seq_write(path)
        rows.append(("seq write 1M", name, mib, "MiB/s", p99))

    # group commit: 8 devices flushing at once against one alone
    for i in range(8):
        sh("bin/vmfuse", "journal", "create", "--size", "64M", f"g{i}", mnt)
    one, p99one = sync_writes(os.path.join(j, "g0"))
    rows.append(("flush, 1 device", "journal flush", one, "IOPS", p99one))
    eight, p99eight = sync_writes(os.path.join(j, "g"), jobs=8)
    rows.append(("flush, 8 devices", "journal flush", eight, "IOPS", p99eight))
    # the same on the native disk, 1 file and 8: how far this disk's own fdatasyncs scale when they run at once
    native_one, p99 = sync_writes(os.path.join(work, "n0"))
    rows.append(("flush, 1 device", "native disk files", native_one, "IOPS", p99))
    native_eight, p99 = sync_writes(os.path.join(work, "n"), jobs=8)
    rows.append(("flush, 8 devices", "native disk files", native_eight, "IOPS", p99))
    for i in range(8):
        path = os.path.join(work, f"n{i}")
        if os.path.exists(path):
            os.unlink(path)

    # ext4 metadata work: internal journal vs external journal on a vmfuse journal device
    for mode in ("ordered", "journal"):
        for where in ("internal", "vmfuse journal"):
            rows.append(ext4_run(work, mnt, mode, where))

    stored = sum(int(x) for x in sh("sh", "-c", f"stat -c %b {j}/*").stdout.split()) * 512
    # the store file, MapDB's write-ahead log files and the redo log: everything the devices take
    dbsize = sum(os.stat(os.path.join(store, f)).st_blocks * 512 for f in os.listdir(store)
                 if f.startswith("journals.db"))
    print()
    print(f"{'workload':22s} {'target':18s} {'result':>16s} {'p99 lat':>11s} {'vs native':>9s}")
    native = {r[0]: r[2] for r in rows if r[1] == "native disk file"}
    for w, t, v, unit, p99 in rows:
        base = native.get(w)
        ratio = f"{v / base:8.2f}x" if base else ""
        lat = f"{p99:8.3f} ms" if p99 is not None else ""
        print(f"{w:22s} {t:18s} {v:10.1f} {unit:5s} {lat:>11s} {ratio:>9s}")
    print(f"\ngroup commit: 8 devices flush {eight / one:.2f}x as often as 1 alone "
          f"(8 native files: {native_eight / native_one:.2f}x 1)")
    print(f"store: {stored / MiB:.1f} MiB stored in the devices, journals.db* hold {dbsize / MiB:.1f} MiB on disk "
          f"(overhead {100.0 * (dbsize - stored) / max(stored, 1):.1f}%)")
    print(sh("bin/vmfuse", "journal", "list", mnt).stdout)


def ext4_run(work, mnt, mode, where):
    """20,000 small files with an fsync every 100, then extracting a tar of a source tree."""
    data = os.path.join(work, f"ext4-{mode}-{where.split()[0]}.img")
    sh("truncate", "-s", "2G", data)
    dloop = sh("losetup", "-f", "--show", data).stdout.strip()
    loops = [dloop]
    fsmnt = os.path.join(work, "fsmnt")
    os.makedirs(fsmnt, exist_ok=True)
    try:
        if where == "internal":
            sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-J", "size=64", dloop)
            opts = f"data={mode}"
        else:
            jdev = os.path.join(mnt, "journals", f"ext4-{mode}")
            sh("bin/vmfuse", "journal", "create", "--size", "64M", f"ext4-{mode}", mnt)
            jloop = sh("losetup", "-f", "--show", jdev).stdout.strip()
            loops.append(jloop)
            sh("mke2fs", "-q", "-O", "journal_dev", "-b", "4096", jloop)
            sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-J", f"device={jloop}", dloop)
            opts = f"data={mode},journal_path={jloop}"
        sh("mount", "-o", opts, dloop, fsmnt)
        try:
            drop_caches()
            t0 = time.perf_counter()
            sh("python3", "-c", "import os, sys\n"
               "d = sys.argv[1]\n"
               "for i in range(20000):\n"
               "    fd = os.open(f'{d}/f{i}', os.O_CREAT | os.O_WRONLY, 0o644)\n"
               "    os.write(fd, b'x' * 200)\n"
               "    if i % 100 == 99: os.fsync(fd)\n"
               "    os.close(fd)\n", fsmnt, timeout=1200)
            sh("sh", "-c", f"mkdir {fsmnt}/src && tar -C {fsmnt}/src -xf {work}/tree.tar && sync", timeout=1200)
            secs = time.perf_counter() - t0
        finally:
            sh("umount", fsmnt)
    finally:
        for l in loops:
            sh("losetup", "-d", l, check=False)
        os.unlink(data)
    return (f"ext4 data={mode}", "internal journal" if where == "internal" else "on vmfuse device", secs, "s", None)


if __name__ == "__main__":
    main()
