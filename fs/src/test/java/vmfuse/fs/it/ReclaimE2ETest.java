package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The reclaimer end to end: a guest whose disk cannot discard (virtio-blk discard=off, so fstrim
 * fails in it) runs guest-tools/vmfuse-agent; it writes 64 MiB, deletes it, and the image's
 * allocation on the host drops while the VM runs; the guest's fsck is clean and its other files
 * unchanged.
 */
@Tag("integration")
class ReclaimE2ETest {
    static final long MiB = 1 << 20;

    @BeforeAll
    static void buildGuest() {
        Guest.build();
    }

    private static final String SCRIPT = String.join("\n",
            "DATA=",
            "for d in /dev/vd?; do [ \"$(head -c 14 $d)\" = \"#vmfuse-script\" ] || DATA=$d; done",
            "/usr/sbin/mke2fs -q -F -t ext4 -b 4096 -E nodiscard $DATA",
            "mount -t ext4 $DATA /mnt",
            "mkdir /mnt/data",
            "if /usr/sbin/fstrim /mnt 2>/dev/null; then echo 'fstrim worked: this disk discards'; exit 1; fi",
            "echo 'fstrim refused: no discard'",
            "/guest-tools/vmfuse-agent --watch /mnt/data --state /mnt/.agent 2>/tmp/agent.log &",
            "while [ ! -f /mnt/.agent/ready ]; do sleep 1; done",
            "for i in 1 2 3; do dd if=/dev/urandom of=/mnt/data/keep$i bs=64k count=16 2>/dev/null; done",
            "dd if=/dev/urandom of=/mnt/data/big bs=1M count=64 2>/dev/null",
            "sync",
            "n=0; while [ $(ls /mnt/.agent/index | wc -l) -lt 4 ] && [ $n -lt 60 ]; do sleep 1; n=$((n+1)); done",
            "sha256sum /mnt/data/keep* > /tmp/sums",
            "echo 'vmfuse-guest: before delete'",
            "sleep 2",
            "rm /mnt/data/big",
            "sync",
            "n=0; while [ -n \"$(ls /mnt/.agent/queue)\" ] && [ $n -lt 90 ]; do sleep 1; n=$((n+1)); done",
            "cat /tmp/agent.log",
            "[ -z \"$(ls /mnt/.agent/queue)\" ] || { echo 'the notice was not acknowledged'; exit 1; }",
            "echo 'vmfuse-guest: notice acknowledged'",
            "sleep 3",
            "killall inotifywait vmfuse-agent sleep 2>/dev/null || true",
            "sleep 1",
            "umount /mnt",
            "/usr/sbin/e2fsck -fn $DATA",
            "mount -t ext4 $DATA /mnt",
            "sha256sum -c /tmp/sums",
            "umount /mnt");

    /** raw: the filesystem keeps the fence and punches; qcow2: QEMU does, through its QMP socket. */
    @ParameterizedTest
    @ValueSource(strings = {"raw", "qcow2"})
    void aGuestThatCannotDiscardGetsItsDeletedSpaceBackWhileItRuns(String format) throws Exception {
        // a store of its own: its free fraction, hence the reclaim threshold, does not depend on the host
        try (Mounted m = Mounted.onTmpfs("400m")) {
            String name = "vm." + format;
            Path img = m.image(name);
            Proc.ok("qemu-img", "create", "-q", "-f", format, img.toString(), "96M");
            Path sock = m.root.resolve("vm.agent");
            Path qmp = m.root.resolve("vm.qmp");
            List<String> add = new ArrayList<>(List.of("vm", "add", "vm", "--image", "images/" + name, "--agent-socket",
                    sock.toString()));
            if (format.equals("qcow2")) {
                add.addAll(List.of("--qmp-socket", qmp.toString()));
            }
            add.add(m.mnt.toString());
            m.vmfuse(add.toArray(String[]::new)).assertOk();
            List<String> devices = List.of(
                    "-drive", "file=" + img + ",format=" + format + ",if=none,id=d0,discard=unmap,cache=writeback",
                    "-device", "virtio-blk-pci,drive=d0,discard=off",
                    "-chardev", "socket,id=ag,path=" + sock + ",reconnect=1",
                    "-device", "virtio-serial", "-device", "virtserialport,chardev=ag,name=vmfuse.agent",
                    "-qmp", "unix:" + qmp + ",server=on,wait=off");
            long before = -1;
            try (Guest.Running g = Guest.start(m.root, SCRIPT, devices)) {
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(300);
                while (g.qemu().isAlive() && System.nanoTime() < deadline) {
                    if (before < 0 && g.console().contains("vmfuse-guest: before delete")) {
                        before = Disk.allocated(m.backing(name));
                    }
                    Thread.sleep(200);
                }
                String out = g.console();
                if (g.qemu().isAlive() || !out.contains("vmfuse-guest: exit 0")) {
                    fail("guest failed or did not finish; console:\n" + Proc.tail(out) + "\n" + m.log());
                }
                assertTrue(out.contains("fstrim refused"), out);
                // the script runs with sh -e: reaching exit 0 means e2fsck -fn found nothing and every sum matched
                assertTrue(out.contains("Pass 5: Checking group summary information"), Proc.tail(out));
                assertTrue(out.contains("/mnt/data/keep3: OK"), Proc.tail(out));
            }
            assertTrue(before > 64 * MiB, "allocated before the delete: " + before);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            long now = Disk.allocated(m.backing(name));
            while (before - now < 0.9 * 64 * MiB && System.nanoTime() < deadline) {
                Thread.sleep(200);
                now = Disk.allocated(m.backing(name));
            }
            assertTrue(before - now >= 0.9 * 64 * MiB, "allocation " + before + " -> " + now + "\n" + m.log());
            m.awaitLog("reclaim vm=vm image=" + name + " punched seq=1");
            if (format.equals("qcow2")) {
                Proc.Result check = Proc.run("qemu-img", "check", img.toString());
                assertTrue(check.ok() && check.out().contains("No errors were found"), check.describe());
                assertTrue(!java.nio.file.Files.exists(m.store.resolve("reclaim/vm.nbd.paused")),
                        "the carry-out let the VM run again and removed its marker");
            }
        }
    }
}
