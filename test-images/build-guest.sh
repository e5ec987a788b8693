#!/bin/sh
# Builds the test guest from Debian packages only: the host's kernel (linux-image-amd64), an
# initramfs with busybox-static, the modules for virtio disks and ext4, the host's e2fsprogs,
# util-linux and xfsprogs tools and inotifywait (Debian's busybox-static has no inotifyd) with
# the libraries ldd names, and guest-tools/.
# Output: $GUEST_OUT (default test-images/build): vmlinuz, initramfs.gz, inputs.sha256.
# The build is skipped when its inputs (this script, init, the kernel, modules, binaries,
# guest-tools) are unchanged.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out=${GUEST_OUT:-$here/build}
kver=$(ls /lib/modules | sort -V | tail -1)
kernel=/boot/vmlinuz-$kver
[ -r "$kernel" ] || { echo "build-guest: no kernel at $kernel (apt-get install linux-image-amd64)" >&2; exit 1; }

modules=""
for m in virtio_pci virtio_blk virtio_console crc32c_generic ext4; do
    for ko in $(modprobe -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'); do
        case " $modules " in *" $ko "*) ;; *) modules="$modules $ko" ;; esac
    done
done
tools="/usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/debugfs /usr/sbin/dumpe2fs /usr/sbin/filefrag
       /usr/sbin/fstrim /usr/sbin/blkdiscard /usr/sbin/xfs_io /usr/bin/inotifywait"
gt=$(find "$repo/guest-tools" -type f 2>/dev/null | sort)

stamp=$( (cat "$0" "$here/init"; sha256sum "$kernel" /bin/busybox $modules $tools $gt) | sha256sum | cut -d' ' -f1)
if [ -f "$out/inputs.sha256" ] && [ "$(cat "$out/inputs.sha256")" = "$stamp" ] \
        && [ -f "$out/initramfs.gz" ] && [ -f "$out/vmlinuz" ]; then
    exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" "$root/proc" "$root/sys" \
    "$root/dev" "$root/tmp" "$root/mnt" "$root/modules" "$root/guest-tools"
cp /bin/busybox "$root/bin/busybox"
cp "$here/init" "$root/init"
chmod 755 "$root/init"
: > "$root/modules.order"
for ko in $modules; do
    cp "$ko" "$root/modules/"
    basename "$ko" >> "$root/modules.order"
done
for t in $tools; do
    cp "$t" "$root$t"
    for lib in $(ldd "$t" | awk '/=>/ {print $3} $1 ~ /^\// {print $1}'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
done
cp /etc/mke2fs.conf "$root/etc/"
[ -n "$gt" ] && cp -r "$repo/guest-tools/." "$root/guest-tools/"

mkdir -p "$out"
cp "$kernel" "$out/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$out/initramfs.gz.tmp"
mv "$out/initramfs.gz.tmp" "$out/initramfs.gz"
echo "$stamp" > "$out/inputs.sha256"
echo "build-guest: $out/initramfs.gz ($(du -h "$out/initramfs.gz" | cut -f1)), kernel $kver" >&2
