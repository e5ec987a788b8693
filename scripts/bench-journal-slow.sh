#!/bin/sh
# Journal devices on a slow data disk (make bench): see scripts/bench/journal_slow_bench.py. Prints one table.
# BENCH_DIR (default /var/tmp/vmfuse-jslow) holds the store; BENCH_WDELAY (default 2ms) is the data disk's delay.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
W=${BENCH_DIR:-/var/tmp/vmfuse-jslow}
cleanup() {
    set +e
    umount -l "$W/fsmnt" 2>/dev/null
    losetup -a | grep "$W" | cut -d: -f1 | xargs -r -n1 losetup -d
    fusermount3 -u -z "$W/slow" 2>/dev/null
    pkill -f "nbdkit -f -U $W/slow.sock" 2>/dev/null
    cp "$W/store/vmfuse.log" "${TMPDIR:-/tmp}/vmfuse-jslow.log" 2>/dev/null # the daemon's log, after the run
    "$repo/bin/vmfuse" umount "$W/mnt" >/dev/null 2>&1 || fusermount -u -z "$W/mnt" 2>/dev/null
    umount -l "$W/tmpfs" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
rm -rf "$W"
mkdir -p "$W/store" "$W/mnt" "$W/tmpfs"
mount -t tmpfs -o size=256m vmfuse-jslow "$W/tmpfs"
cd "$repo"
bin/vmfuse mount --store "$W/store" --metrics 127.0.0.1:0 "$W/mnt" # the log's forces, counted
metrics=""
i=0
while [ -z "$metrics" ] && [ $i -lt 100 ]; do # the daemon's log says where (its lines may come a little late)
    metrics=$(sed -n 's/.*metrics at \(http:[^ ]*\).*/\1/p' "$W/store/vmfuse.log" | tail -1)
    i=$((i + 1)); [ -n "$metrics" ] || sleep 0.1
done
[ -n "$metrics" ] || { echo "bench-journal-slow: the daemon did not say where its metrics are" >&2; exit 1; }
echo "vmfuse journal-on-a-slow-disk benchmark: $(nproc) cores, store on $(df -h --output=source,fstype "$W" | tail -1 | tr -s ' ')" >&2
python3 "$repo/scripts/bench/journal_slow_bench.py" "$W" "$W/mnt" "$W/tmpfs" "$metrics"
