#!/bin/sh
# Benchmark inside the test guest (make bench): a metadata-heavy job on ext4 on an image in the
# vmfuse mount, with the filesystem's internal journal against its journal on a vmfuse journal
# device, in data=ordered and data=journal. Prints one table. Guest under TCG: times are long,
# the ratio is what counts. BENCH_DIR (default /var/tmp/vmfuse-gbench) must be on a real disk.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
W=${BENCH_DIR:-/var/tmp/vmfuse-gbench}
cleanup() {
    set +e
    "$repo/bin/vmfuse" umount "$W/mnt" >/dev/null 2>&1 || fusermount -u -z "$W/mnt" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
rm -rf "$W"
mkdir -p "$W/store" "$W/mnt"
"$repo/test-images/build-guest.sh"
"$repo/bin/vmfuse" mount --store "$W/store" "$W/mnt"

# The job, timed in the guest (by /proc/uptime, in hundredths of a second): 5,000 files of
# 1 KiB with an fsync every 50, then extracting a tar of the guest's own /lib, /usr and
# /modules (about 2,000 files), then sync.
job='
t0=$(cut -d" " -f1 /proc/uptime | tr -d . | sed "s/^0*//")
i=0
while [ $i -lt 5000 ]; do
  head -c 1024 /dev/urandom > /mnt/f$i
  [ $((i % 50)) -eq 49 ] && sync /mnt/f$i
  i=$((i+1))
done
mkdir /mnt/tree && tar -C /mnt/tree -xf /tmp/tree.tar && sync
t1=$(cut -d" " -f1 /proc/uptime | tr -d . | sed "s/^0*//")
echo "elapsed_ms=$(( (t1 - t0) * 10 ))"'

run() { # mode journal(internal|external)
    mode=$1; where=$2
    img="$W/mnt/images/g-$mode-$where.raw"
    truncate -s 1G "$img"
    drives="-drive file=$img,format=raw,if=virtio,cache=none"
    if [ "$where" = external ]; then
        "$repo/bin/vmfuse" journal create --size 64M "g-$mode" "$W/mnt"
        drives="$drives -drive file=$W/mnt/journals/g-$mode,format=raw,if=virtio,cache=none"
        mkfs='/usr/sbin/mke2fs -q -O journal_dev -b 4096 /dev/vdb
/usr/sbin/mke2fs -q -F -t ext4 -b 4096 -J device=/dev/vdb /dev/vda'
    else
        mkfs='/usr/sbin/mke2fs -q -F -t ext4 -b 4096 -J size=64 /dev/vda'
    fi
    printf '#vmfuse-script\n%s\ntar -cf /tmp/tree.tar /lib /usr /modules 2>/dev/null\nmount -t ext4 -o data=%s /dev/vda /mnt\n%s\numount /mnt\n' \
        "$mkfs" "$mode" "$job" > "$W/script.img"
    truncate -s 64k "$W/script.img"
    # shellcheck disable=SC2086
    timeout 1800 qemu-system-x86_64 -accel tcg -m 512 -smp 1 -nodefaults -display none -monitor none -no-reboot \
        -serial "file:$W/console.log" -kernel "$repo/test-images/build/vmlinuz" \
        -initrd "$repo/test-images/build/initramfs.gz" -append "console=ttyS0 quiet panic=-1" \
        $drives -drive "file=$W/script.img,format=raw,if=virtio,readonly=on"
    ms=$(sed -n 's/.*elapsed_ms=\([0-9]*\).*/\1/p' "$W/console.log")
    [ -n "$ms" ] || { echo "bench-guest: the guest did not finish ($mode, $where):" >&2; tail -20 "$W/console.log" >&2; exit 1; }
    echo "$ms"
}

echo "vmfuse guest benchmark: $(nproc) cores, QEMU TCG, backing $(df -h --output=source,fstype "$W" | tail -1 | tr -s ' ')" >&2
printf '\n%-14s %18s %18s %10s\n' "ext4 mode" "internal journal" "vmfuse journal" "speed-up"
for mode in ordered journal; do
    a=$(run "$mode" internal)
    b=$(run "$mode" external)
    awk -v m="data=$mode" -v a="$a" -v b="$b" 'BEGIN { printf "%-14s %15.1f s %15.1f s %9.2fx\n", m, a / 1000, b / 1000, a / b }'
done
