#!/bin/sh
# Benchmark of the mount (make bench): fio and punch-holes on the native backing directory,
# vmfuse, bindfs over the same directory (multithreaded, big_writes, max_write=131072: vmfuse's own
# write size), and qemu-storage-daemon's FUSE export of a raw image.
# Prints one table. BENCH_DIR (default /var/tmp/vmfuse-bench) must be on a real disk.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
W=${BENCH_DIR:-/var/tmp/vmfuse-bench}
qsd_pid=""

cleanup() {
    set +e
    "$repo/bin/vmfuse" umount "$W/mnt" >/dev/null 2>&1 || fusermount -u -z "$W/mnt" 2>/dev/null
    fusermount -u -z "$W/bindfs" 2>/dev/null
    if [ -n "$qsd_pid" ]; then kill "$qsd_pid" 2>/dev/null; wait "$qsd_pid" 2>/dev/null; fi
    fusermount -u -z "$W/qsd.img" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

rm -rf "$W"
mkdir -p "$W/store/images" "$W/mnt" "$W/bindfs"
"$repo/bin/vmfuse" mount --store "$W/store" "$W/mnt"
# bindfs at its best: libfuse 2 sends 4 KiB writes without big_writes, and one thread serves all
bindfs --no-allow-other --multithreaded -o big_writes,max_write=131072 "$W/store/images" "$W/bindfs"

# qemu-storage-daemon exports one raw image as a file; discard=unmap on both nodes so that a
# punch through the export reaches the image file (without it, 7.2 answers success and frees nothing)
truncate -s 1G "$W/store/images/qsd.raw"
touch "$W/qsd.img"
timeout 3600 qemu-storage-daemon \
    --blockdev driver=file,node-name=file0,filename="$W/store/images/qsd.raw",discard=unmap \
    --blockdev driver=raw,node-name=raw0,file=file0,discard=unmap \
    --export type=fuse,id=exp0,node-name=raw0,mountpoint="$W/qsd.img",writable=on &
qsd_pid=$!
i=0
until mountpoint -q "$W/qsd.img" 2>/dev/null || grep -q " $W/qsd.img " /proc/self/mounts; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "bench: qemu-storage-daemon export did not come up" >&2; exit 1; }
    sleep 0.1
done

echo "vmfuse mount benchmark: $(nproc) cores, backing $(df -h --output=source,fstype "$W" | tail -1 | tr -s ' ')," \
     "fio $(fio --version), $(qemu-storage-daemon --version | head -1)" >&2
python3 "$repo/scripts/bench/mount_bench.py" "$W" "[
  [\"native\", \"$W/store/images/bench.raw\", \"$W/store/images/bench.raw\"],
  [\"vmfuse\", \"$W/mnt/images/bench.raw\", \"$W/store/images/bench.raw\"],
  [\"bindfs\", \"$W/bindfs/bench.raw\", \"$W/store/images/bench.raw\"],
  [\"qsd-fuse\", \"$W/qsd.img\", \"$W/store/images/qsd.raw\"]]"
