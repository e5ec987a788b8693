#!/usr/bin/env python3
"""vmfuse NBD benchmark: one table comparing, in one run and on one image file, the native file,
vmfuse's FUSE mount, vmfuse's NBD export, qemu-nbd and nbdkit's file plugin. fio drives the
first rows (psync at depth 1 and io_uring at depth 16 on files; its nbd engine on the servers);
qemu-img bench, QEMU's own block layer and NBD client, drives the next; the last row is a
journal device's 4 KiB write + flush through FUSE and through NBD. Page caches are dropped
before every read row; write rows end with a flush. Every row runs BENCH_ROUNDS times (default
3), the targets interleaved within each round; the table shows the median, then says which
targets were met.

Usage: nbd_bench.py TARGETS_JSON JOURNAL_JSON [ISOLATION_JSON]   (run by scripts/bench-nbd.sh as root)
  TARGETS_JSON    [[name, "file"|"nbd", path or URI], ...], the first the native file
  JOURNAL_JSON    [[name, "file"|"nbd", path or URI], ...], one journal device through each door
  ISOLATION_JSON  [flusher, streamer]: two exports of two tenants of one vmfuse
"""
import json
import os
import re
import subprocess
import sys
import time

MiB = 1 << 20
SIZE = 1024 * MiB
RUNTIME = os.environ.get("BENCH_RUNTIME", "4")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# a p99 of one tenant moves from round to round by more than the targets' margin: more of both
ISOLATION_ROUNDS = max(ROUNDS, 5)
ISOLATION_OPS = 3000
ONLY = os.environ.get("BENCH_ONLY", "")  # only the rows whose name holds this (for development)


def sh(*cmd, timeout=600):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def fio(target, rw, bs, depth, extra=()):
    """(MiB/s, IOPS, p99 ms) of one fio job on a file (psync or io_uring) or an NBD URI."""
    _, kind, where = target
    args = ["fio", "--output-format=json", "--name=job", f"--rw={rw}", f"--bs={bs}", f"--iodepth={depth}",
            f"--size={SIZE}", "--numjobs=1", "--percentile_list=99", "--time_based", f"--runtime={RUNTIME}",
            # the first second not counted, for every target alike: a fresh daemon's first requests
            # of a kind run before the JIT has compiled their path
            "--ramp_time=1"]
    if kind == "nbd":
        args += ["--ioengine=nbd", f"--uri={where}"]
    else:
        args += [f"--filename={where}", "--ioengine=" + ("psync" if depth == 1 else "io_uring"), "--invalidate=1"]
    out = sh(*args, *extra, timeout=300)
    job = json.loads(out[out.index("{"):])["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    p99 = side["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1e6
    if any("fdatasync" in e for e in extra):
        p99 += job.get("sync", {}).get("lat_ns", {}).get("percentile", {}).get("99.000000", 0) / 1e6
    return side["bw_bytes"] / MiB, side["iops"], p99


def qemu_img_bench(target, size, depth, count, write, flush_interval=0):
    """(MiB/s, IOPS) of qemu-img bench: QEMU's block layer (its NBD client for the servers)."""
    _, kind, where = target
    args = ["qemu-img", "bench", "-f", "raw", "-c", str(count), "-d", str(depth), "-s", str(size)]
    if write:
        args.append("-w")
    if flush_interval:
        args.append(f"--flush-interval={flush_interval}")
    if kind == "file":
        args += ["-t", "writeback", "-i", "io_uring"]
    out = sh(*args, where, timeout=600)
    seconds = float(re.search(r"Run completed in ([0-9.]+) seconds", out).group(1))
    return count * size / MiB / seconds, count / seconds, None


ROWS = [
    # name, unit, what it runs on a target, drop caches first
    ("fio seq write 1M qd1", "MiB/s", lambda t: fio(t, "write", "1M", 1, ["--end_fsync=1"]), False),
    ("fio seq read 1M qd1", "MiB/s", lambda t: fio(t, "read", "1M", 1), True),
    ("fio rand write 4K qd1", "IOPS", lambda t: fio(t, "randwrite", "4k", 1, ["--end_fsync=1"]), False),
    ("fio rand write 4K qd16", "IOPS", lambda t: fio(t, "randwrite", "4k", 16, ["--end_fsync=1"]), False),
    ("fio rand read 4K qd1", "IOPS", lambda t: fio(t, "randread", "4k", 1), True),
    ("fio rand read 4K qd16", "IOPS", lambda t: fio(t, "randread", "4k", 16), True),
    ("qemu-img 4K write+flush", "IOPS", lambda t: qemu_img_bench(t, 4096, 1, 4000, True, 1), False),
    ("qemu-img 1M write qd4", "MiB/s", lambda t: qemu_img_bench(t, MiB, 4, 1024, True), False),
    ("qemu-img 4K read qd16", "IOPS", lambda t: qemu_img_bench(t, 4096, 16, 100000, False), True),
]
def flush_lat(target, count=2000):
    """(None, IOPS, p99 ms) of 4 KiB writes each flushed, one at a time, timed alike through both doors."""
    _, kind, where = target
    if kind == "nbd":
        m = re.match(r"nbd\+unix:///(.*)\?socket=(.*)", where)
        args = ["nbd", m.group(2), m.group(1)]
    else:
        args = ["file", where]
    out = json.loads(sh(sys.executable, os.path.join(os.path.dirname(__file__), "flush_lat.py"), *args, str(count)))
    return None, out["iops"], out["p99_ms"]


JOURNAL_ROW = ("journal 4K write+flush", "IOPS", flush_lat, False)


def isolation(flusher, streamer):
    """p99 of 4 KiB write+flush on one export alone, then beside 1 MiB writes at depth 8 on another."""
    os.sync()  # what an earlier round's stream left dirty is on the disk before "alone" is timed
    alone = flush_lat(flusher, ISOLATION_OPS)[2]
    # --thread: the job in fio's own process, so that killing it stops the stream (a job process
    # of its own is a session of its own: it outlived the kill, writing for its 60 s into the
    # next rounds' "alone" timings)
    fio_args = ["fio", "--name=stream", "--thread", "--rw=write", "--bs=1M", "--iodepth=8", "--time_based",
                "--runtime=60", "--output-format=terse"]
    if streamer[1] == "nbd":
        fio_args += ["--ioengine=nbd", f"--uri={streamer[2]}"]
    else:
        fio_args += ["--ioengine=io_uring", f"--filename={streamer[2]}"]
    # start_new_session: the stream's client in a CPU group of its own (autogroup), as each VM's
    # QEMU is in its own cgroup under libvirt; in the bench's group, the flushing client's every
    # wake-up waited behind the streaming client's copies, which no server can help
    stream = subprocess.Popen(fio_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        time.sleep(2)  # the stream under way
        beside = flush_lat(flusher, ISOLATION_OPS)[2]
    finally:
        stream.kill()
        stream.wait(timeout=60)
    return alone, beside


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def measure(rows, targets):
    runs = {}
    for name, unit, run, cold in rows:
        for _ in range(ROUNDS):
            for t in targets:
                if cold:
                    drop_caches()
                mib, iops, p99 = run(t)
                runs.setdefault((name, t[0]), []).append((mib if unit == "MiB/s" else iops, p99))
                print(f"    {name} {t[0]}: {runs[(name, t[0])][-1][0]:.1f} {unit}", file=sys.stderr, flush=True)
        print(f"  {name} done", file=sys.stderr, flush=True)
    return {k: (median([r[0] for r in v]), None if v[0][1] is None else median([r[1] for r in v]))
            for k, v in runs.items()}


def main():
    targets = json.loads(sys.argv[1])
    journal = json.loads(sys.argv[2])
    rows = [r for r in ROWS if ONLY in r[0]]
    results = measure(rows, targets)
    jrows = [JOURNAL_ROW] if ONLY in JOURNAL_ROW[0] else []
    jresults = measure(jrows, journal)

    native = targets[0][0]
    print()
    print(f"median of {ROUNDS} rounds; one {SIZE // MiB} MiB raw image; fio rows {RUNTIME} s each")
    print(f"{'workload':24s} {'target':12s} {'result':>16s} {'p99 lat':>10s} {'vs native':>9s}")
    verdicts = []
    for name, unit, _, _ in rows:
        for t in targets:
            value, p99 = results[(name, t[0])]
            lat = "" if p99 is None else f"{p99:7.3f} ms"
            print(f"{name:24s} {t[0]:12s} {value:10.1f} {unit:5s} {lat:>10s} {value / results[(name, native)][0]:8.2f}x")
        print()
        ours = results[(name, "vmfuse-nbd")][0]
        peer = max(results[(name, p)][0] for p in ("qemu-nbd", "nbdkit"))
        verdicts.append((f"{name}: vmfuse NBD >= the faster of qemu-nbd and nbdkit", ours >= peer,
                         f"{ours:.1f} vs {peer:.1f} {unit}"))
        if name.startswith("fio seq"):
            ratio = ours / results[(name, native)][0]
            verdicts.append((f"{name}: vmfuse NBD >= 0.8x native", ratio >= 0.8, f"{ratio:.2f}x"))
    for name, unit, _, _ in jrows:
        for t in journal:
            value, p99 = jresults[(name, t[0])]
            print(f"{name:24s} {t[0]:12s} {value:10.1f} {unit:5s} {p99:7.3f} ms")
        fuse_p99 = jresults[(name, journal[0][0])][1]
        nbd_p99 = jresults[(name, journal[1][0])][1]
        verdicts.append(("journal device: 4K write+flush p99 through NBD below FUSE", nbd_p99 < fuse_p99,
                         f"{nbd_p99:.3f} vs {fuse_p99:.3f} ms"))
        print()
    if ONLY in "isolation" and len(sys.argv) > 3:
        pairs = json.loads(sys.argv[3])  # [[flusher, streamer], ...], the first on native files
        print("isolation: 4K write+flush p99 on one image, alone and beside 1 MiB writes at depth 8 on another, "
              f"median of {ISOLATION_ROUNDS} interleaved rounds of {ISOLATION_OPS} each (for vmfuse: two tenants, "
              "equal weights; the stream's client in a session of its own, as a VM's QEMU has its cgroup)")
        ratios = {}
        runs = {flusher[0]: [] for flusher, _ in pairs}
        for flusher, _ in pairs:
            flush_lat(flusher, 300)  # warm: a first round's "alone" paid the JIT's compiles
        for _ in range(ISOLATION_ROUNDS):  # the targets interleaved, as in the rows above
            for flusher, streamer in pairs:
                runs[flusher[0]].append(isolation(flusher, streamer))
        for flusher, _ in pairs:
            alone = median([r[0] for r in runs[flusher[0]]])
            beside = median([r[1] for r in runs[flusher[0]]])
            ratios[flusher[0]] = (alone, beside)
            print(f"{'p99 alone':24s} {flusher[0]:12s} {alone:10.3f} ms")
            print(f"{'p99 beside the stream':24s} {flusher[0]:12s} {beside:10.3f} ms {beside / alone:8.2f}x")
        print()
        alone, beside = ratios["vmfuse-nbd"]
        floor = ratios[pairs[0][0][0]]
        what = "isolation: a flushing tenant's p99 beside a streaming one within 2x of alone"
        detail = f"{beside / alone:.2f}x; the native files in the same run: {floor[1] / floor[0]:.2f}x, the disk's own"
        if alone > 5 * floor[0]:  # "alone" caught the disk still writing back: a ratio to it says nothing
            verdicts.append((what, None, detail + f"; NOT MEASURED: alone took {alone:.3f} ms against "
                             f"{floor[0]:.3f} ms native, the disk was busy with its own writeback; run again"))
        else:
            verdicts.append((what, beside <= 2 * alone, detail))
    print("targets:")
    for what, met, detail in verdicts:
        print(f"  {'-------' if met is None else 'met    ' if met else 'NOT MET'}  {what} ({detail})")


if __name__ == "__main__":
    main()
