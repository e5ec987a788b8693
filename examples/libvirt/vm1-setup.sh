#!/bin/sh
# What examples/libvirt/vm1.xml needs before `virsh start vm1`, on a store mounted at $MNT with its
# NBD door on $RUN/nbd.sock (vmfuse@.service with VMFUSE_OPTS=--nbd unix:/run/vmfuse/nbd.sock).
# Each variable may be set from the environment; LibvirtTest runs this script as it is.
set -eu
MNT=${MNT:-/srv/vmfuse}                 # the mount
RUN=${RUN:-/run/vmfuse}                 # root's: the NBD door's socket, the agents' (vmfuse@.service makes it)
QEMU_USER=${QEMU_USER:-libvirt-qemu}    # the user libvirt runs QEMU as
VMFUSE=${VMFUSE:-vmfuse}
SYSTEM_SIZE=${SYSTEM_SIZE:-20G}
DATA_SIZE=${DATA_SIZE:-100G}

# QEMU makes its QMP socket (and, beside it, the socket of the reclaimer's NBD export) as the user it
# runs as: in a directory of the VM's own, so that no QEMU may write where root's sockets are
mkdir -p "$RUN"
install -d -o "$QEMU_USER" -m 0700 "$RUN/qemu" "$RUN/qemu/vm1"
qemu-img create -q -f qcow2 "$MNT/images/vm1.qcow2" "$SYSTEM_SIZE"                 # vda
"$VMFUSE" journal create vm1 --size 128M "$MNT"                                   # vdb: vda's ext4 journal
qemu-img create -q -f raw "$MNT/images/vm1-data.raw" "$DATA_SIZE"                 # vdc, over NBD
"$VMFUSE" export add vm1-data --uid "$(id -u "$QEMU_USER")" --image images/vm1-data.raw "$MNT"
"$VMFUSE" vm add vm1 --image images/vm1.qcow2 --agent-socket "$RUN/vm1.agent" \
    --qmp-socket "$RUN/qemu/vm1/qmp.sock" --agent-user "$QEMU_USER" "$MNT"
