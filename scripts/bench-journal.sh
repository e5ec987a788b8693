#!/bin/sh
# Benchmark of journal devices (make bench): see scripts/bench/journal_bench.py. Prints one table.
# BENCH_DIR (default /var/tmp/vmfuse-jbench) must be on a real disk.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
W=${BENCH_DIR:-/var/tmp/vmfuse-jbench}
cleanup() {
    set +e
    umount -l "$W/fsmnt" 2>/dev/null
    fusermount -u -z "$W/bindfs-tmpfs" 2>/dev/null
    fusermount -u -z "$W/bindfs-native" 2>/dev/null
    for l in $(losetup -j "$W/mnt/journals" -O NAME -n 2>/dev/null); do losetup -d "$l"; done
    losetup -a | grep "$W" | cut -d: -f1 | xargs -r -n1 losetup -d
    "$repo/bin/vmfuse" umount "$W/mnt" >/dev/null 2>&1 || fusermount -u -z "$W/mnt" 2>/dev/null
    umount -l "$W/tmpfs" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
rm -rf "$W"
mkdir -p "$W/store" "$W/mnt" "$W/tmpfs" "$W/native" "$W/bindfs-tmpfs" "$W/bindfs-native"
mount -t tmpfs -o size=1200m vmfuse-bench "$W/tmpfs"
# the FUSE floor: a C passthrough on the same libfuse 2, over the tmpfs and over the native disk,
# with the write size vmfuse mounts with (without big_writes libfuse 2 sends 4 KiB writes)
for d in tmpfs native; do
    bindfs --no-allow-other --multithreaded -o big_writes,max_write=131072 "$W/$d" "$W/bindfs-$d"
done
# a source tree to extract: Python's standard library (Debian's python3.11), ~4,300 files, 54 MB
tar -C /usr/lib -cf "$W/tree.tar" python3.11
cd "$repo"
bin/vmfuse mount --store "$W/store" --nbd "unix:$W/nbd.sock" "$W/mnt"
echo "vmfuse journal benchmark: $(nproc) cores, backing $(df -h --output=source,fstype "$W" | tail -1 | tr -s ' ')" >&2
python3 "$repo/scripts/bench/journal_bench.py" "$W" "$W/mnt" "$W/store" "$W/tmpfs" "$W/native" \
    "$W/bindfs-tmpfs" "$W/bindfs-native"
