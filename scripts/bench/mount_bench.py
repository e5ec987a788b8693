#!/usr/bin/env python3
"""vmfuse mount benchmark: one table comparing, in one run, the native backing directory,
vmfuse, bindfs (a C libfuse passthrough) over the same directory, and qemu-storage-daemon's FUSE
export of one raw image. fio drives the I/O rows; the punch-hole row is 1024 fallocate(PUNCH_HOLE)
calls of 64 KiB through ctypes, timed one by one, with the blocks really released measured on the
backing file (st_blocks). Page caches are dropped before every read row; write rows end with
fsync, so each number includes reaching the disk. The disks of these machines are noisy, so every
row runs BENCH_ROUNDS times (default 3), the targets interleaved within each round, and the table
shows the median.

Usage: mount_bench.py WORKDIR   (run by scripts/bench-mount.sh as root)
"""
import ctypes
import json
import os
import subprocess
import sys
import time

MiB = 1 << 20
SIZE = 1024 * MiB          # file size for the I/O rows
RUNTIME = os.environ.get("BENCH_RUNTIME", "5")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PUNCH_REGION = 256 * MiB   # the punches are spread over this much of the file, refilled each round
ONLY = os.environ.get("BENCH_ONLY", "")  # run only the rows whose name contains this (for development)
PUNCHES = 1024
PUNCH_LEN = 64 * 1024

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def sh(*cmd, timeout=600, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def fio(path, name, rw, bs, extra):
    args = ["fio", "--output-format=json", f"--name={name}", f"--filename={path}", f"--size={SIZE}",
            f"--rw={rw}", f"--bs={bs}", "--ioengine=psync", "--iodepth=1", "--numjobs=1",
            "--percentile_list=99", "--invalidate=1"] + extra
    out = sh(*args, timeout=900).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]
    side = job["read"] if rw in ("read", "randread") else job["write"]
    p99 = side["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1e6
    if "fdatasync" in " ".join(extra):
        sync = job.get("sync", {})
        p99 += sync.get("lat_ns", {}).get("percentile", {}).get("99.000000", 0) / 1e6
    return side["bw_bytes"] / MiB, side["iops"], p99


def allocated(path):
    return os.stat(path).st_blocks * 512


def punch(path, backing):
    """1024 punches of 64 KiB spread over the file; ops/s, p99 ms, bytes the backing file released."""
    fd = os.open(path, os.O_RDWR)
    try:
        before = allocated(backing)
        lat = []
        stride = PUNCH_REGION // PUNCHES
        t0 = time.perf_counter()
        for i in range(PUNCHES):
            s = time.perf_counter()
            if libc.fallocate(fd, 3, i * stride, PUNCH_LEN) != 0:
                return None, os.strerror(ctypes.get_errno()), 0
            lat.append(time.perf_counter() - s)
        total = time.perf_counter() - t0
        os.fsync(fd)
    finally:
        os.close(fd)
    released = before - allocated(backing)
    lat.sort()
    return PUNCHES / total, lat[int(len(lat) * 0.99)] * 1000, released


ROWS = [
    ("seq write 1M", "MiB/s", lambda p: fio(p, "sw", "write", "1M", ["--end_fsync=1"])),
    ("seq read 1M", "MiB/s", lambda p: fio(p, "sr", "read", "1M", [])),
    ("rand write 4K", "IOPS", lambda p: fio(p, "rw", "randwrite", "4k",
                                            ["--time_based", f"--runtime={RUNTIME}", "--end_fsync=1"])),
    ("rand read 4K", "IOPS", lambda p: fio(p, "rr", "randread", "4k", ["--time_based", f"--runtime={RUNTIME}"])),
    ("4K write+fdatasync", "IOPS", lambda p: fio(p, "ws", "randwrite", "4k",
                                                 ["--time_based", f"--runtime={RUNTIME}", "--fdatasync=1"])),
]


def fill(path, size):
    sh("fio", "--name=fill", f"--filename={path}", f"--size={size}", "--rw=write", "--bs=1M",
       "--ioengine=psync", "--end_fsync=1", "--output-format=terse", timeout=900)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    targets = json.loads(sys.argv[2])  # [[name, io_path, backing_path], ...]
    for backing in sorted({t[2] for t in targets}):
        fill(backing, SIZE)  # every target overwrites allocated blocks; none pays allocation
    runs = {}
    rows = [r for r in ROWS if ONLY in r[0]]
    for row, unit, run in rows:
        for rnd in range(ROUNDS):
            for name, path, backing in targets:
                drop_caches()
                mib, iops, p99 = run(path)
                runs.setdefault((row, name), []).append((mib if unit == "MiB/s" else iops, p99, None))
        print(f"  {row} done", file=sys.stderr, flush=True)
    for rnd in range(ROUNDS if ONLY in "punch 1024x64K" else 0):
        for name, path, backing in targets:
            fill(path, PUNCH_REGION)  # real data under every punch
            runs.setdefault(("punch 1024x64K", name), []).append(punch(path, backing))
    print("  punch done", file=sys.stderr, flush=True)
    results = {}
    for key, rs in runs.items():
        if any(r[0] is None for r in rs):
            results[key] = next(r for r in rs if r[0] is None)
        else:
            results[key] = (median([r[0] for r in rs]), median([r[1] for r in rs]),
                            None if rs[0][2] is None else median([r[2] for r in rs]))

    print()
    print(f"median of {ROUNDS} rounds; psync, iodepth 1; file {SIZE // MiB} MiB; timed rows {RUNTIME} s")
    print(f"{'workload':20s} {'target':10s} {'result':>16s} {'p99 lat':>10s} {'vs native':>9s} {'released':>10s}")
    for row, unit in [(r, u) for r, u, _ in rows] + ([("punch 1024x64K", "ops/s")] if ONLY in "punch 1024x64K" else []):
        native = results[(row, targets[0][0])][0]
        for name, _, _ in targets:
            value, p99, released = results[(row, name)]
            if value is None:
                print(f"{row:20s} {name:10s} {'refused: ' + p99:>40s}")
                continue
            rel = "" if released is None else f"{released / MiB:.1f} MiB"
            print(f"{row:20s} {name:10s} {value:10.1f} {unit:5s} {p99:7.3f} ms {value / native:8.2f}x {rel:>10s}")
        print()


if __name__ == "__main__":
    main()
