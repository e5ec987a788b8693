#!/bin/sh
# Benchmark of isolation (make bench): the latency of an image's reads and writes while another
# subsystem stalls (issue 14). See scripts/bench/stall_bench.py. Prints one table.
# BENCH_DIR (default /var/tmp/vmfuse-sbench) must be on a real disk.
#
# The store's own disk (journals.db and its redo log) is a slow one made of real parts, as the
# tests make theirs (FACTS.md: no device-mapper here): nbdkit's file plugin behind its delay
# filter (every write 20 ms), nbdfuse, a loop device, ext4. images/ is a bind mount of a
# directory on the real disk, so that the image rows measure vmfuse, not the slow disk.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
W=${BENCH_DIR:-/var/tmp/vmfuse-sbench}
nbdkit_pid=""
nbdfuse_pid=""
loop=""
cleanup() {
    set +e
    "$repo/bin/vmfuse" umount "$W/mnt" >/dev/null 2>&1 || fusermount -u -z "$W/mnt" 2>/dev/null
    pkill -CONT -f "qemu-system-x86_64.*$W" 2>/dev/null
    pkill -KILL -f "qemu-system-x86_64.*$W" 2>/dev/null
    umount -l "$W/store/images" 2>/dev/null
    umount -l "$W/store" 2>/dev/null
    [ -n "$loop" ] && losetup -d "$loop"
    fusermount3 -u -z "$W/nbdf" 2>/dev/null
    [ -n "$nbdfuse_pid" ] && kill "$nbdfuse_pid" 2>/dev/null
    [ -n "$nbdkit_pid" ] && kill "$nbdkit_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
rm -rf "$W"
mkdir -p "$W/store" "$W/mnt" "$W/native" "$W/nbdf"
truncate -s 1G "$W/journal-disk.img"
wait_for() { # PATH WHAT: 10 s at most
    i=0
    until [ -e "$1" ]; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "bench: $2 did not come up" >&2; exit 1; }
        sleep 0.1
    done
}
timeout 3600 nbdkit -f -U "$W/nbd.sock" --filter=delay file "$W/journal-disk.img" delay-write=20ms &
nbdkit_pid=$!
wait_for "$W/nbd.sock" nbdkit
timeout 3600 nbdfuse "$W/nbdf" --unix "$W/nbd.sock" &
nbdfuse_pid=$!
wait_for "$W/nbdf/nbd" nbdfuse
loop=$(losetup -f --show "$W/nbdf/nbd")
mkfs.ext4 -q "$loop"
mount "$loop" "$W/store"
mkdir -p "$W/store/images"
mount --bind "$W/native" "$W/store/images"
"$repo/bin/vmfuse" mount --store "$W/store" --journal-memory 4M --journal-durability close "$W/mnt"
echo "vmfuse isolation benchmark: $(nproc) cores, images on $(df -h --output=source,fstype "$W/native" | tail -1 | tr -s ' ')," \
     "fio $(fio --version), $(qemu-system-x86_64 --version | head -1)" >&2
python3 "$repo/scripts/bench/stall_bench.py" "$W" "$repo/bin/vmfuse"
