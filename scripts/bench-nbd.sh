#!/bin/sh
# Benchmark of the NBD door (make bench): see scripts/bench/nbd_bench.py. Prints one table.
# One raw image served at once by vmfuse (its FUSE mount and its NBD socket), qemu-nbd and nbdkit,
# each used in turn. BENCH_DIR (default /var/tmp/vmfuse-nbench) must be on a real disk;
# BENCH_IO_WORKERS sets vmfuse's --io-workers (default: the daemon's).
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
W=${BENCH_DIR:-/var/tmp/vmfuse-nbench}
pids=""
cleanup() {
    set +e
    for p in $pids; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    "$repo/bin/vmfuse" umount "$W/mnt" >/dev/null 2>&1 || fusermount -u -z "$W/mnt" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
rm -rf "$W"
mkdir -p "$W/store/images" "$W/mnt"
img="$W/store/images/bench.raw"
fio --name=fill --filename="$img" --size=1G --rw=write --bs=1M --ioengine=psync --end_fsync=1 \
    --output-format=terse >/dev/null # every target overwrites allocated blocks; none pays allocation
"$repo/bin/vmfuse" mount --store "$W/store" --nbd "unix:$W/vmfuse.sock" ${BENCH_IO_WORKERS:+--io-workers $BENCH_IO_WORKERS} "$W/mnt"
"$repo/bin/vmfuse" journal create --size 256M bench "$W/mnt" >/dev/null
# two tenants for the isolation rows: a flusher on bench.raw, a streamer on stream.raw
fio --name=fill --filename="$W/store/images/stream.raw" --size=1G --rw=write --bs=1M --ioengine=psync \
    --end_fsync=1 --output-format=terse >/dev/null
"$repo/bin/vmfuse" export add flusher --uid 0 --image images/bench.raw "$W/mnt"
"$repo/bin/vmfuse" export add streamer --uid 0 --image images/stream.raw "$W/mnt"
# the peers at their best settings here: qemu-nbd with its page cache and io_uring (faster than
# --aio=threads in a run of fio at depth 16: 34.6k against 21.5k 4K writes/s); nbdkit's file
# plugin with its default (parallel) thread model
timeout 7200 qemu-nbd --persistent --shared=16 --socket="$W/qemu-nbd.sock" --format=raw --cache=writeback \
    --aio=io_uring --discard=unmap "$img" &
pids="$pids $!"
timeout 7200 nbdkit --foreground --unix "$W/nbdkit.sock" file "$img" &
pids="$pids $!"
i=0
until [ -S "$W/qemu-nbd.sock" ] && [ -S "$W/nbdkit.sock" ]; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "bench: qemu-nbd or nbdkit did not come up" >&2; exit 1; }
    sleep 0.1
done
echo "vmfuse NBD benchmark: $(nproc) cores, backing $(df -h --output=source,fstype "$W" | tail -1 | tr -s ' ')," \
     "$(fio --version), $(qemu-nbd --version | head -1) --cache=writeback --aio=io_uring," \
     "$(nbdkit --version) file plugin (thread model parallel)" >&2
python3 "$repo/scripts/bench/nbd_bench.py" "[
  [\"native\", \"file\", \"$img\"],
  [\"vmfuse-fuse\", \"file\", \"$W/mnt/images/bench.raw\"],
  [\"vmfuse-nbd\", \"nbd\", \"nbd+unix:///images/bench.raw?socket=$W/vmfuse.sock\"],
  [\"qemu-nbd\", \"nbd\", \"nbd+unix:///?socket=$W/qemu-nbd.sock\"],
  [\"nbdkit\", \"nbd\", \"nbd+unix:///?socket=$W/nbdkit.sock\"]]" "[
  [\"vmfuse-fuse\", \"file\", \"$W/mnt/journals/bench\"],
  [\"vmfuse-nbd\", \"nbd\", \"nbd+unix:///journals/bench?socket=$W/vmfuse.sock\"]]" "[
  [[\"native\", \"file\", \"$img\"], [\"stream\", \"file\", \"$W/store/images/stream.raw\"]],
  [[\"vmfuse-nbd\", \"nbd\", \"nbd+unix:///images/bench.raw?socket=$W/vmfuse.sock\"],
   [\"streamer\", \"nbd\", \"nbd+unix:///images/stream.raw?socket=$W/vmfuse.sock\"]]]"
