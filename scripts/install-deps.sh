#!/bin/sh
# Installs every system package vmfuse needs to build, run, test and benchmark.
# Idempotent: packages already present are not touched, and apt-get runs only
# when something is missing. Called by `make run`, `make test` and `make bench`.
set -eu

PACKAGES="
  openjdk-17-jdk-headless maven
  libfuse2 fuse3
  qemu-utils qemu-system-x86
  e2fsprogs xfsprogs util-linux
  fio bindfs strace python3 nbdkit libnbd-bin
  busybox-static linux-image-amd64 cpio kmod inotify-tools
  prometheus libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libxml2-utils
"
# prometheus: for promtool, which checks the metrics' exposition in the tests (its server is not used).
# libvirt: its daemon and virsh, for the tests that run examples/libvirt (as a session daemon of their
# own: the system daemon, its user and its services, libvirt-daemon-system's, are not installed).

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: missing packages:$missing (run as root, or install them)" >&2
        exit 1
    fi
    echo "install-deps: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    dpkg --configure -a # finishes an install that an earlier run, interrupted, left half done
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The FUSE device must exist; in containers it sometimes has to be created.
if [ ! -c /dev/fuse ]; then
    if [ "$(id -u)" -eq 0 ]; then
        mknod -m 666 /dev/fuse c 10 229
    else
        echo "install-deps: /dev/fuse is missing" >&2
        exit 1
    fi
fi
# The loop driver (used by tests that put ext4 on an image through losetup).
modprobe loop 2>/dev/null || true
