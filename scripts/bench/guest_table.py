#!/usr/bin/env python3
"""The tables of scripts/bench-guest.sh: reads "MODE PLACE MILLISECONDS" lines, one per guest run,
and prints per mode and journal placement the median time, its speed-up over the internal journal
and every run; for the slow disk, the share of the RAM journal's gain each vmfuse device gets and
issue 17's target (0.9 for a flush-mode device).

Usage: guest_table.py fast|slow WDELAY < runs
"""
import sys

NAMES = {"internal": "internal journal", "ram": "RAM journal (ceiling)", "flush": "vmfuse flush, FUSE",
         "nbd": "vmfuse flush, NBD", "close": "vmfuse close, FUSE", "nbdclose": "vmfuse close, NBD",
         "nodisk": "no disk (floor)"}


def main():
    disk, delay = sys.argv[1], sys.argv[2]
    runs = {}
    for line in sys.stdin:
        mode, place, ms = line.split()
        runs.setdefault((mode, place), []).append(int(ms) / 1000)
    med = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
    if disk == "slow":
        print(f"\nslow data disk (nbdkit --filter=delay wdelay={delay}, through QEMU's NBD client): "
              "2,000 files of 1 KiB, an fsync every 10")
    else:
        print("\nfast data disk (a raw image on the mount, on the host's disk): 5,000 files of 1 KiB, "
              "an fsync every 50, then a tar")
    print(f"{'mode':14s} {'journal':22s} {'median s':>9s} {'speed-up':>9s}   runs (s)")
    for (mode, place), times in runs.items():
        t = med[(mode, place)]
        print(f"data={mode:9s} {NAMES[place]:22s} {t:9.2f} {med[(mode, 'internal')] / t:8.2f}x   "
              + " ".join(f"{x:.2f}" for x in times))
    if disk != "slow":
        return
    print(f"\n{'target (issue 17, guest): share of the RAM journal gain':58s} {'result':>8s} {'met':>4s}")
    for mode in ("ordered", "journal"):
        internal, ram = med[(mode, "internal")], med[(mode, "ram")]
        for place in ("flush", "nbd", "close", "nbdclose"):
            share = (internal - med[(mode, place)]) / (internal - ram) if internal > ram else float("nan")
            target = place in ("flush", "nbd")
            label = f"data={mode}: {NAMES[place]}" + (" >= 0.9" if target else "")
            met = ("yes" if share >= 0.9 else "no") if target else ""
            print(f"{label:58s} {share:8.2f} {met:>4s}")


if __name__ == "__main__":
    main()
