#!/usr/bin/env python3
"""vmfuse isolation benchmark (issue 14): an image's reads and writes keep their latency while
another subsystem stalls. One table, in one run: fio on a file of the native disk, then on an
image in the vmfuse mount idle, with the journal store held at its memory bound, and with a
SIGSTOPped QEMU in the middle of a qcow2 reclaim. Each fio row is 4 KiB random reads, then 4 KiB
random writes each followed by fdatasync (O_DIRECT, psync, iodepth 1: every I/O is one request
to the daemon); the conditions are interleaved within each round and the table shows medians of
BENCH_ROUNDS rounds (default 3). Ratios are to the idle image; the target is p99 within 2x.
The native row is for scale only: vmfuse opens backing files without O_DIRECT, so its reads
come from the page cache where the native file's come from the disk.

- journal store at its memory bound: 24 writers, each rewriting its own journal device 1 MiB at
  a time (the kernel admits one write at a time into a FUSE file), against a 4 MiB memory bound
  and a store disk that takes 20 ms per write: at any moment most of them wait for a checkpoint.
  More requests wait than the daemon has FUSE threads (16).
- QEMU stopped in a reclaim: a VM with a qcow2 image and a QEMU (-S, QMP) whose agent reported
  64 MiB deleted; `vmfuse vm reclaim` is asked while its QEMU is SIGSTOPped, so the reclaimer
  waits on QMP (up to its 60 s timeout) for the whole row.

Usage: stall_bench.py WORKDIR VMFUSE   (run by scripts/bench-stall.sh as root)
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

MiB = 1 << 20
RUNTIME = os.environ.get("BENCH_RUNTIME", "5")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WRITERS = 24
SIZE = 256 * MiB


def sh(*cmd, timeout=600, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


def fio(path, rw):
    extra = ["--fdatasync=1"] if rw == "randwrite" else []
    out = sh("fio", "--output-format=json", "--name=lat", f"--filename={path}", f"--size={SIZE}", f"--rw={rw}",
             "--bs=4k", "--ioengine=psync", "--iodepth=1", "--direct=1", "--time_based", f"--runtime={RUNTIME}",
             "--percentile_list=99", *extra, timeout=300).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]
    side = job["read"] if rw == "randread" else job["write"]
    p99 = side["clat_ns"]["percentile"]["99.000000"] / 1e6
    if rw == "randwrite":
        p99 += job["sync"]["lat_ns"]["percentile"]["99.000000"] / 1e6
    return side["iops"], p99


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def fuse_threads(pid):
    n = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                n += f.read().startswith("fuse-")
        except OSError:
            pass
    return n


class JournalLoad:
    """WRITERS threads, each rewriting its own journal device until stopped."""

    def __init__(self, mnt):
        self.paths = [f"{mnt}/journals/load{i}" for i in range(WRITERS)]
        for p in self.paths:
            if not os.path.exists(p):
                with open(p, "wb") as f:
                    f.truncate(8 * MiB)
        self.stop = threading.Event()
        self.written = 0
        self.threads = []

    def run(self, path, seed):
        data = os.urandom(MiB)
        fd = os.open(path, os.O_WRONLY)
        try:
            i = seed
            while not self.stop.is_set():
                os.pwrite(fd, data, (i % 8) * MiB)
                self.written += MiB
                i += 1
        finally:
            os.close(fd)

    def __enter__(self):
        self.stop.clear()
        self.threads = [threading.Thread(target=self.run, args=(p, i), daemon=True) for i, p in enumerate(self.paths)]
        for t in self.threads:
            t.start()
        time.sleep(2)  # until memory is at its bound and writers wait
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=300)
            if t.is_alive():
                raise SystemExit("bench: a journal writer did not finish within 300 s")


class StoppedQemu:
    """A VM with a qcow2 image whose QEMU is SIGSTOPped while `vmfuse vm reclaim` runs for it."""

    def __init__(self, work, mnt, vmfuse):
        self.work, self.mnt, self.vmfuse = work, mnt, vmfuse
        self.img = f"{mnt}/images/vmq.qcow2"
        self.qmp = f"{work}/vmq.qmp"
        self.agent = f"{work}/vmq.agent"
        sh("qemu-img", "create", "-q", "-f", "qcow2", self.img, "4G")
        sh("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64m", self.img)
        sh(vmfuse, "vm", "add", "vmq", "--image", "vmq.qcow2", "--agent-socket", self.agent, "--qmp-socket",
           self.qmp, mnt)
        self.qemu = subprocess.Popen(["timeout", "3600", "qemu-system-x86_64", "-S", "-accel", "tcg", "-nodefaults",
                                      "-display", "none", "-qmp", f"unix:{self.qmp},server=on,wait=off",
                                      "-drive", f"file={self.img},format=qcow2,if=none,id=d0,discard=unmap"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            if os.path.exists(self.qmp):
                break
            time.sleep(0.1)
        else:
            raise SystemExit("bench: QEMU's QMP socket did not appear")
        self.reclaims = 0

    def qemu_pid(self):
        # `timeout` runs QEMU as its child
        out = sh("pgrep", "-P", str(self.qemu.pid), "-f", "qemu-system-x86_64").stdout.split()
        return int(out[0])

    def notice(self, stop_before_sending):
        """A fence token (QEMU adds its bitmap), then the 64 MiB notice; QEMU stopped in between if asked."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.agent)
            f = s.makefile("rw")
            f.write("HELLO vmfuse-agent 1\n")
            f.flush()
            last = int(f.readline().split()[3])
            f.write("FENCE\n")
            f.flush()
            token = f.readline().split()[1]
            stop_before_sending()
            self.reclaims = last + 1
            f.write(f"NOTICE {self.reclaims} {token} {64 * MiB} 0:{64 * MiB}\n")
            f.flush()
            answer = f.readline().strip()
            if not answer.startswith("ACK"):
                raise SystemExit(f"bench: the agent's notice was answered {answer}")

    def __enter__(self):
        # stopped before the notice is sent, so that whichever carry-out comes (the threshold's, or
        # vm reclaim's) waits on the stopped QEMU for the whole row
        self.pid = self.qemu_pid()
        self.notice(lambda: os.kill(self.pid, signal.SIGSTOP))
        self.reclaim = subprocess.Popen(["timeout", "600", self.vmfuse, "vm", "reclaim", "vmq", self.mnt],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1)
        if self.reclaim.poll() is not None:
            raise SystemExit("bench: vm reclaim did not wait on the stopped QEMU: " + self.reclaim.stdout.read())
        return self

    def __exit__(self, *exc):
        os.kill(self.pid, signal.SIGCONT)
        out, _ = self.reclaim.communicate(timeout=600)  # done, or failed (QMP timed out): it no longer waits
        self.reclaim_output = f"exit {self.reclaim.returncode}: " + " ".join(out.split())

    def close(self):
        self.qemu.kill()
        self.qemu.wait()


def main():
    work, vmfuse = sys.argv[1], sys.argv[2]
    mnt = f"{work}/mnt"
    daemon = int(open(f"{work}/store/vmfuse.pid").read().split()[0])
    native = f"{work}/native/native.raw"
    image = f"{mnt}/images/b.raw"
    for p in (native, image):
        sh("dd", "if=/dev/urandom", f"of={p}", "bs=1M", f"count={SIZE // MiB}", "conv=fsync", "status=none")
    load = JournalLoad(mnt)
    qemu = StoppedQemu(work, mnt, vmfuse)
    rows = ["native disk file (reads from the disk)", "vmfuse image, idle", "vmfuse image, journal store at its memory bound",
            "vmfuse image, QEMU stopped in a qcow2 reclaim"]
    results = {r: [] for r in rows}
    notes = {}
    try:
        for rnd in range(ROUNDS):
            results[rows[0]].append(fio(native, "randread") + fio(native, "randwrite"))
            results[rows[1]].append(fio(image, "randread") + fio(image, "randwrite"))
            with load:
                before = load.written
                threads = fuse_threads(daemon)
                results[rows[2]].append(fio(image, "randread") + fio(image, "randwrite"))
                threads = max(threads, fuse_threads(daemon))
                rate = (load.written - before) / MiB
            notes[rows[2]] = f"{WRITERS} writers, {rate:.0f} MiB written meanwhile; FUSE threads {threads}"
            with qemu:
                results[rows[3]].append(fio(image, "randread") + fio(image, "randwrite"))
            notes[rows[3]] = "vm reclaim, asked while QEMU was stopped: " + qemu.reclaim_output[:90]
            print(f"  round {rnd + 1} done", file=sys.stderr, flush=True)
    finally:
        qemu.close()

    print()
    print(f"median of {ROUNDS} rounds; 4 KiB random, O_DIRECT, psync, iodepth 1; writes each with fdatasync; "
          f"{RUNTIME} s per row")
    print(f"{'condition':50s} {'read IOPS':>9s} {'read p99':>10s} {'write IOPS':>10s} {'write p99':>10s} "
          f"{'p99 vs idle (r/w)':>18s}")
    med = {r: [median([x[i] for x in results[r]]) for i in range(4)] for r in rows}
    idle = med[rows[1]]
    verdicts = []
    for r in rows:
        riops, rp99, wiops, wp99 = med[r]
        ratio = f"{rp99 / idle[1]:.2f}x / {wp99 / idle[3]:.2f}x"
        print(f"{r:50s} {riops:9.0f} {rp99:7.3f} ms {wiops:10.0f} {wp99:7.3f} ms {ratio:>18s}")
        if r in notes:
            print(f"{'':4s}{notes[r]}")
        if r in rows[2:]:
            verdicts.append((r, rp99 / idle[1], wp99 / idle[3]))
    print()
    for r, rr, wr in verdicts:
        met = "met" if rr <= 2 and wr <= 2 else "NOT met"
        print(f"target (issue 14): {r}: read and write p99 within 2x of idle: {met} ({rr:.2f}x, {wr:.2f}x)")


if __name__ == "__main__":
    main()
