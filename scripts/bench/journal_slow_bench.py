#!/usr/bin/env python3
"""Journal devices where they should pay: a data disk whose writes cost milliseconds, as on network
storage (issue 17). One table, one run: ext4 on a slow disk (a loop device over an nbdfuse file of
`nbdkit --filter=delay memory ... wdelay=2ms`) runs the same job with its journal in four places:

  internal         on the slow disk itself: every journal write pays the delay
  journal in RAM   on a loop device over a tmpfs file: no placement can beat it (the ceiling)
  vmfuse flush     a vmfuse journal device in flush mode (a flush is on disk when it returns)
  vmfuse close     a vmfuse journal device in close mode (committed at close, unmount, every 5 s)

The job: 3,000 files of 200 bytes, an fsync every 100, in data=ordered and data=journal. Each
placement runs BENCH_ROUNDS times (default 3), interleaved; the table shows the median time and
the speed-up over the internal journal. The target: vmfuse in flush mode gets at least 0.95 of
the ceiling's gain, the time the RAM journal saves over the internal one ((internal - flush) /
(internal - RAM)).

Beside it, what flush mode can reach on this store's disk: a flush is on disk when it returns,
so each costs at least one fdatasync of the redo log (a jbd2 commit is two flushes: the preflush
before its commit block and the flush that stands in for its FUA, which a loop device and
virtio-blk do not pass on). The floor row is the RAM journal's time plus the flushes ext4 asked
of the device during the job (the daemon's metrics) times the median of a 4 KiB pwrite +
fdatasync on the store's disk, measured in the same run: the time of a flush-mode device whose
every flush cost one bare fdatasync and nothing else, not even FUSE's round trips.

Usage: journal_slow_bench.py WORKDIR MOUNTPOINT TMPFS METRICS-URL   (run by scripts/bench-journal-slow.sh as
       root; MOUNTPOINT a vmfuse mount on a store in WORKDIR, TMPFS a tmpfs for the RAM journal, METRICS-URL
       the daemon's /metrics)
"""
import os
import re
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from mount_bench import sh, drop_caches  # noqa: E402
from journal_bench import small_files, mkfs_external  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3")) | 1  # odd: the median is a run
DELAY = os.environ.get("BENCH_WDELAY", "2ms")
FILES = 3000
PLACES = ("internal", "journal in RAM", "vmfuse flush", "vmfuse close")


class SlowDisk:
    """A 512 MiB disk in nbdkit's memory whose every write takes DELAY more, as a file (nbdfuse)."""

    def __init__(self, work):
        self.work = work
        self.sock = os.path.join(work, "slow.sock")
        self.dir = os.path.join(work, "slow")
        os.makedirs(self.dir, exist_ok=True)
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.nbdkit = subprocess.Popen(["nbdkit", "-f", "-U", self.sock, "--filter=delay", "memory", "512M",
                                        f"wdelay={DELAY}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.sock)
        self.nbdfuse = subprocess.Popen(["nbdfuse", self.dir, "--unix", self.sock],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.file = os.path.join(self.dir, "nbd")
        wait_for(self.file)

    def close(self):
        sh("fusermount3", "-u", self.dir, check=False)
        for p in (self.nbdfuse, self.nbdkit):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_for(path, seconds=30):
    end = time.time() + seconds
    while not os.path.exists(path):
        if time.time() > end:
            raise SystemExit(f"bench: {path} did not appear")
        time.sleep(0.05)


def gain_share(internal, ceiling, t):
    """The share of the ceiling's gain over the internal journal that a time t gets: 1 is all of
    the time the RAM journal saves, 0 none of it (the issue's measure: a speed-up of 1.50x against
    a ceiling of 1.59x is 0.85 of its gain)."""
    return (internal - t) / (internal - ceiling) if internal > ceiling else float("nan")


def device_flushes(metrics):
    """Flushes the journal devices were asked for since mount (every device's), from the daemon's metrics."""
    text = urllib.request.urlopen(metrics, timeout=10).read().decode()
    return sum(float(v) for v in re.findall(r"^vmfuse_journal_flush_seconds_count\{[^}]*\} (\S+)$", text, re.M))


def fdatasync_median(directory, n=200):
    """Median seconds of a 4 KiB pwrite + fdatasync, overwriting a preallocated file in directory (as the log)."""
    path = os.path.join(directory, "fdatasync.probe")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.pwrite(fd, b"\0" * (n << 12), 0)
        os.fsync(fd)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            os.pwrite(fd, b"x" * 4096, i << 12)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return sorted(times)[n // 2]


def run(work, mnt, disk, tmpfs, mode, place, n, metrics, flushes):
    """One run of the job; returns its seconds. For a flush-mode device, appends the flushes ext4 asked of it to flushes."""
    dloop = sh("losetup", "-f", "--show", disk.file).stdout.strip()
    loops = [dloop]
    fsmnt = os.path.join(work, "fsmnt")
    os.makedirs(fsmnt, exist_ok=True)
    try:
        if place == "internal":
            sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=1,nodiscard", "-J", "size=16", dloop)
            opts = f"data={mode}"
        else:
            if place == "journal in RAM":
                jfile = os.path.join(tmpfs, "journal.img")
                sh("truncate", "-s", "16M", jfile)
            else:
                name = f"slow-{mode}-{place.split()[1]}-{n}"
                sh("bin/vmfuse", "journal", "create", "--size", "16M", "--durability", place.split()[1], name, mnt)
                jfile = os.path.join(mnt, "journals", name)
            jloop = sh("losetup", "-f", "--show", jfile).stdout.strip()
            loops.append(jloop)
            mkfs_external(dloop, jloop, "-E", "lazy_itable_init=1,nodiscard")
            opts = f"data={mode},journal_path={jloop}"
        sh("mount", "-o", opts, dloop, fsmnt)
        try:
            drop_caches()
            before = device_flushes(metrics) if place == "vmfuse flush" else 0
            t0 = time.perf_counter()
            small_files(fsmnt, FILES)
            secs = time.perf_counter() - t0
            if place == "vmfuse flush":
                flushes.append(device_flushes(metrics) - before)
        finally:
            sh("umount", fsmnt)
    finally:
        for lo in reversed(loops):
            sh("losetup", "-d", lo, check=False)
        if place == "journal in RAM":
            os.unlink(os.path.join(tmpfs, "journal.img"))
        elif place != "internal":
            os.unlink(os.path.join(mnt, "journals", f"slow-{mode}-{place.split()[1]}-{n}"))
    return secs


def main():
    work, mnt, tmpfs, metrics = sys.argv[1:5]
    disk = SlowDisk(work)
    flushes = {"ordered": [], "journal": []}
    try:
        # the disk's own cost, for the header: a 4 KiB O_DSYNC write on it (after one to warm it up)
        dsync = ("dd", "if=/dev/zero", f"of={disk.file}", "bs=4k", "oflag=dsync", "conv=notrunc", "status=none")
        sh(*dsync, "count=1")
        t0 = time.perf_counter()
        sh(*dsync, "count=20")
        per_write = (time.perf_counter() - t0) / 20 * 1000
        times = {}
        for r in range(ROUNDS):
            for mode in ("ordered", "journal"):
                for place in PLACES:
                    times.setdefault((mode, place), []).append(run(work, mnt, disk, tmpfs, mode, place, r, metrics,
                                                                   flushes[mode]))
        fsync_s = fdatasync_median(work)
    finally:
        disk.close()
    print()
    print(f"ext4 on a slow disk (nbdkit delay filter, wdelay={DELAY}: a 4 KiB O_DSYNC write to the disk's file took "
          f"{per_write:.1f} ms), {FILES} files of 200 bytes, an fsync every 100; median of {ROUNDS} interleaved rounds")
    print(f"{'mode':14s} {'journal':16s} {'median s':>9s} {'runs':>30s} {'speed-up':>9s}")
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    asked = {mode: sorted(f)[len(f) // 2] for mode, f in flushes.items()}  # ext4's flushes per job, median
    floor = {mode: med[(mode, "journal in RAM")] + asked[mode] * fsync_s for mode in asked}
    for mode in ("ordered", "journal"):
        for place in PLACES:
            t = med[(mode, place)]
            runs = " ".join(f"{x:.3f}" for x in times[(mode, place)])
            print(f"data={mode:9s} {place:16s} {t:9.3f} {runs:>30s} {med[(mode, 'internal')] / t:8.2f}x")
        print(f"data={mode:9s} {'flush floor':16s} {floor[mode]:9.3f} {'':>30s} "
              f"{med[(mode, 'internal')] / floor[mode]:8.2f}x   RAM + {asked[mode]:.0f} flushes x {fsync_s * 1000:.3f} ms")
    print(f"\n{'target (issue 17): share of the RAM journal gain':58s} {'result':>8s} {'met':>4s}")
    for mode in ("ordered", "journal"):
        internal, ram = med[(mode, "internal")], med[(mode, "journal in RAM")]
        for place, t in (("vmfuse flush", med[(mode, "vmfuse flush")]), ("vmfuse close", med[(mode, "vmfuse close")]),
                         ("flush floor", floor[mode])):
            share = gain_share(internal, ram, t)
            verdict = {"vmfuse flush": "yes" if share >= 0.95 else "no"}.get(place, "")
            label = f"data={mode}: {place}" + (" >= 0.95" if place == "vmfuse flush" else "")
            print(f"{label:58s} {share:8.2f} {verdict:>4s}")
    print("\nflush floor: the RAM journal's time plus the flushes ext4 asked of the device during the job (median of "
          "the flush-mode\nruns), each at the median 4 KiB pwrite + fdatasync of the store's disk in this run: what a "
          "flush-mode device\nwould take if each flush cost one bare fdatasync and nothing else.")


if __name__ == "__main__":
    main()
