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
the ceiling's speed-up (its speed-up divided by the RAM journal's).

Usage: journal_slow_bench.py WORKDIR MOUNTPOINT TMPFS   (run by scripts/bench-journal-slow.sh as root;
       MOUNTPOINT a vmfuse mount, TMPFS a tmpfs for the RAM journal)
"""
import os
import subprocess
import sys
import time

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


def run(work, mnt, disk, tmpfs, mode, place, n):
    """One run of the job; returns its seconds."""
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
            t0 = time.perf_counter()
            small_files(fsmnt, FILES)
            secs = time.perf_counter() - t0
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
    work, mnt, tmpfs = sys.argv[1], sys.argv[2], sys.argv[3]
    disk = SlowDisk(work)
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
                    times.setdefault((mode, place), []).append(run(work, mnt, disk, tmpfs, mode, place, r))
    finally:
        disk.close()
    print()
    print(f"ext4 on a slow disk (nbdkit delay filter, wdelay={DELAY}: a 4 KiB O_DSYNC write to the disk's file took "
          f"{per_write:.1f} ms), {FILES} files of 200 bytes, an fsync every 100; median of {ROUNDS} interleaved rounds")
    print(f"{'mode':14s} {'journal':16s} {'median s':>9s} {'runs':>24s} {'speed-up':>9s}")
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    for mode in ("ordered", "journal"):
        for place in PLACES:
            t = med[(mode, place)]
            runs = " ".join(f"{x:.2f}" for x in times[(mode, place)])
            print(f"data={mode:9s} {place:16s} {t:9.2f} {runs:>24s} {med[(mode, 'internal')] / t:8.2f}x")
    print(f"\n{'target (issue 17)':58s} {'result':>8s} {'met':>4s}")
    for mode in ("ordered", "journal"):
        ceiling = med[(mode, "internal")] / med[(mode, "journal in RAM")]
        for place in ("vmfuse flush", "vmfuse close"):
            got = med[(mode, "internal")] / med[(mode, place)]
            share = got / ceiling
            label = f"data={mode}: {place} speed-up / RAM journal's ({ceiling:.2f}x)"
            verdict = ("yes" if share >= 0.95 else "no") if place == "vmfuse flush" else "(shown)"
            print(f"{label:58s} {share:8.2f} {verdict:>4s}")


if __name__ == "__main__":
    main()
