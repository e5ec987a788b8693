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
    umount "$W/tmpfs" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
rm -rf "$W"
mkdir -p "$W/store" "$W/mnt" "$W/tmpfs"
mount -t tmpfs -o size=1200m vmfuse-gbench "$W/tmpfs"
"$repo/test-images/build-guest.sh"
"$repo/bin/vmfuse" mount --store "$W/store" "$W/mnt"

# The job, timed in the guest (by /proc/uptime, in hundredths of a second): 5,000 files of
# 1 KiB with an fsync every 50, then extracting a tar of the guest's own /lib, /usr and
# /modules (about 2,000 files), then sync. Each file is written by the shell's echo, a builtin:
# with a program started per file (head), the job took 13-19 s instead of 4-5 s: it measured
# TCG's emulation of fork and exec (about 2 ms each) rather than the filesystem and its journal.
job='
data=$(head -c 512 /dev/urandom | od -An -tx1 | tr -d " \n")
t0=$(cut -d" " -f1 /proc/uptime | tr -d . | sed "s/^0*//")
i=0
while [ $i -lt 5000 ]; do
  echo "$data" > /mnt/f$i
  [ $((i % 50)) -eq 49 ] && sync /mnt/f$i
  i=$((i+1))
done
mkdir /mnt/tree && tar -C /mnt/tree -xf /tmp/tree.tar && sync
t1=$(cut -d" " -f1 /proc/uptime | tr -d . | sed "s/^0*//")
echo "elapsed_ms=$(( (t1 - t0) * 10 ))"'

run() { # mode journal(internal|flush|close|nodisk) run-number
    mode=$1; where=$2; n=$3
    img="$W/mnt/images/g-$mode-$where-$n.raw"
    cache=none
    if [ "$where" = nodisk ]; then # the floor: the image in RAM, flushes ignored
        img="$W/tmpfs/g.raw"; cache=unsafe
    fi
    truncate -s 1G "$img"
    drives="-drive file=$img,format=raw,if=virtio,cache=$cache"
    if [ "$where" = flush ] || [ "$where" = close ]; then
        "$repo/bin/vmfuse" journal create --size 64M --durability "$where" "g-$mode-$n" "$W/mnt" >/dev/null
        drives="$drives -drive file=$W/mnt/journals/g-$mode-$n,format=raw,if=virtio,cache=none"
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
    rm -f "$img"
    [ "$where" = internal ] || [ "$where" = nodisk ] || rm -f "$W/mnt/journals/g-$mode-$n"
    echo "$ms"
}

median() { # numbers as arguments
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Each configuration runs BENCH_RUNS times (default 3), all alternating so that the host's noise
# falls on each; the table shows medians, then every run. The vmfuse journal device in both
# durability modes: flush (the default: a guest flush is an fdatasync of the redo log) and close
# (memory speed; a host crash loses what was not checkpointed, see README). "no disk" is the
# floor: the internal-journal job with its image in RAM and flushes ignored (cache=unsafe), the
# time no journal placement can go below.
runs=${BENCH_RUNS:-3}
echo "vmfuse guest benchmark: $(nproc) cores, QEMU TCG, backing $(df -h --output=source,fstype "$W" | tail -1 | tr -s ' '), median of $runs runs" >&2
out=""
runs_out=""
for mode in ordered journal; do
    as=""; bs=""; cs=""; ds=""
    i=1
    while [ $i -le "$runs" ]; do
        as="$as $(run "$mode" internal $i)"
        bs="$bs $(run "$mode" flush $i)"
        cs="$cs $(run "$mode" close $i)"
        ds="$ds $(run "$mode" nodisk $i)"
        i=$((i + 1))
    done
    # shellcheck disable=SC2086
    a=$(median $as); b=$(median $bs); c=$(median $cs); d=$(median $ds)
    out="$out$(awk -v m="data=$mode" -v a="$a" -v b="$b" -v c="$c" -v d="$d" 'BEGIN {
        printf "%-14s %10.1f s %10.1f s %10.1f s %10.1f s %8.2fx %8.2fx %8.2fx\n", m, a / 1000, b / 1000, c / 1000,
            d / 1000, a / b, a / c, a / d }')
"
    runs_out="$runs_out
data=$mode runs (ms): internal$as; flush$bs; close$cs; no disk$ds"
done
printf '\n%-14s %12s %12s %12s %12s %9s %9s %9s\n' "ext4 mode" "internal" "vmfuse" "vmfuse" "no disk" \
    "flush" "close" "no disk"
printf '%-14s %12s %12s %12s %12s %9s %9s %9s\n' "" "journal" "flush dev" "close dev" "(floor)" "speed-up" \
    "speed-up" "(ceiling)"
printf '%s' "$out"
printf '%s\n' "$runs_out"
