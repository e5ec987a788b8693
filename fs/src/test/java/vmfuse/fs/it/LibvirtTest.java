package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * examples/libvirt/vm1.xml and vm1-setup.sh, run by a real libvirt daemon (Debian's libvirtd,
 * domain type qemu: TCG). The daemon is libvirt's session daemon, run as user nobody with its
 * own configuration and sockets in a temporary directory: the system daemon needs the user
 * libvirt-qemu and /etc/libvirt/qemu.conf that Debian's libvirt-daemon-system makes (with
 * services it starts), and this test changes nothing of the host's. What differs from the
 * system daemon: QEMU runs as nobody, and a session daemon does not chown the disks (dynamic
 * ownership), so the test gives them to nobody first, through the mount, as libvirt would.
 *
 * <p>The example runs as it is but for how the guest boots (the test guest's kernel and
 * initramfs, 384 MiB), its console (a file) and the script disk the test adds; its paths are
 * the test's. The guest formats vda (the qcow2 image on the mount) as ext4 with its journal on
 * vdb (the journal device), and vdc (an image served by the NBD door to QEMU's uid) as ext4;
 * its agent reports a deleted 48 MiB file, which `vmfuse vm reclaim` punches while the guest
 * runs, through the second QMP socket of the example's qemu:commandline; fstrim on vdc releases
 * its space through NBD; fsck is clean and the files kept read back whole.
 */
@Tag("integration")
class LibvirtTest {
    static final long MiB = 1 << 20;
    static final Path EXAMPLES = Mounted.REPO.resolve("examples/libvirt");

    @BeforeAll
    static void buildGuest() {
        Guest.build();
    }

    private static final String SCRIPT = String.join("\n",
            "/usr/sbin/mke2fs -q -F -O journal_dev -b 4096 /dev/vdb",
            "/usr/sbin/mke2fs -q -F -t ext4 -b 4096 -E nodiscard -J device=/dev/vdb /dev/vda",
            "/usr/sbin/mke2fs -q -F -t ext4 -b 4096 -E nodiscard /dev/vdc",
            "mount -t ext4 -o journal_path=/dev/vdb /dev/vda /mnt",
            "mkdir -p /mnt/data /data",
            "mount -t ext4 /dev/vdc /data",
            "/guest-tools/vmfuse-agent --watch /mnt/data --state /mnt/.agent 2>/tmp/agent.log &",
            "while [ ! -f /mnt/.agent/ready ]; do sleep 1; done",
            "for i in 1 2 3; do dd if=/dev/urandom of=/mnt/data/keep$i bs=64k count=16 2>/dev/null; done",
            "dd if=/dev/urandom of=/mnt/data/big bs=1M count=48 2>/dev/null",
            "dd if=/dev/urandom of=/data/big bs=1M count=24 2>/dev/null",
            "sync",
            "n=0; while [ $(ls /mnt/.agent/index | wc -l) -lt 4 ] && [ $n -lt 60 ]; do sleep 1; n=$((n+1)); done",
            "sha256sum /mnt/data/keep* > /tmp/sums",
            "echo 'vmfuse-guest: before delete'",
            "sleep 2",
            "rm /mnt/data/big /data/big",
            "sync",
            "n=0; while [ -n \"$(ls /mnt/.agent/queue)\" ] && [ $n -lt 90 ]; do sleep 1; n=$((n+1)); done",
            "[ -z \"$(ls /mnt/.agent/queue)\" ] || { cat /tmp/agent.log; echo 'the notice was not acknowledged'; exit 1; }",
            "echo 'vmfuse-guest: notice acknowledged'",
            "sleep 25", // the host reclaims now, through QMP, while the guest runs
            "/usr/sbin/fstrim -v /data",
            "killall inotifywait vmfuse-agent sleep 2>/dev/null || true",
            "sleep 1",
            "umount /data",
            "umount /mnt",
            "/usr/sbin/e2fsck -fn -j /dev/vdb /dev/vda",
            "/usr/sbin/e2fsck -fn /dev/vdc",
            "mount -t ext4 -o journal_path=/dev/vdb /dev/vda /mnt",
            "sha256sum -c /tmp/sums",
            "umount /mnt");

    /** The example as an operator takes it: valid against libvirt's own domain schema (qemu namespace included). */
    @Test
    void theExampleValidatesAgainstLibvirtsSchema() {
        Proc.Result r = Proc.run(Duration.ofSeconds(60), "virt-xml-validate", EXAMPLES.resolve("vm1.xml").toString(),
                "domain");
        assertEquals(0, r.exit(), r.describe());
        assertTrue((r.out() + r.err()).contains("vm1.xml validates"), r.describe()); // it says so on stderr
    }

    @Test
    void theExampleDomainRunsWithItsDisksJournalNbdDiskAgentAndSecondMonitor() throws Exception {
        Path work = Files.createTempDirectory(Path.of("/tmp"), "vmfuse-libvirt-");
        Path run = work.resolve("run"); // the example's /run/vmfuse
        Path lv = work.resolve("libvirt"); // the session daemon's home, configuration and sockets
        Files.createDirectories(run);
        for (String d : new String[] {"config/libvirt", "cache", "run", "home"}) {
            Files.createDirectories(lv.resolve(d));
        }
        // a file console: no virtlogd to start
        Files.writeString(lv.resolve("config/libvirt/qemu.conf"), "stdio_handler = \"file\"\n");
        Files.copy(Guest.BUILD.resolve("vmlinuz"), run.resolve("vmlinuz"));
        Files.copy(Guest.BUILD.resolve("initramfs.gz"), run.resolve("initramfs.gz"));
        Path scriptDisk = run.resolve("script.img");
        Files.writeString(scriptDisk, "#vmfuse-script\n" + SCRIPT + "\n", StandardCharsets.UTF_8);
        Proc.ok("truncate", "-s", "64k", scriptDisk.toString());
        Proc.ok("chmod", "-R", "a+rX", work.toString());
        Proc.ok("chown", "-R", "nobody:nogroup", lv.toString()); // run/ stays root's, as /run/vmfuse
        String env = "HOME=" + lv.resolve("home") + " XDG_CONFIG_HOME=" + lv.resolve("config") + " XDG_CACHE_HOME="
                + lv.resolve("cache") + " XDG_RUNTIME_DIR=" + lv.resolve("run");
        try (Mounted m = Mounted.onTmpfs("700m", "--nbd", "unix:" + run.resolve("nbd.sock"));
                Proc.Background libvirtd = Proc.start("runuser", "-u", "nobody", "--", "sh", "-c",
                        "exec env " + env + " libvirtd --timeout 900")) {
            Files.setPosixFilePermissions(m.root, PosixFilePermissions.fromString("rwxr-xr-x"));
            Proc.ok("env", "MNT=" + m.mnt, "RUN=" + run, "QEMU_USER=nobody", "VMFUSE=" + Mounted.VMFUSE,
                    "SYSTEM_SIZE=160M", "DATA_SIZE=96M", "sh", EXAMPLES.resolve("vm1-setup.sh").toString());
            // what libvirt's dynamic ownership does for qemu:///system, a session daemon leaves to us
            Proc.ok("chown", "nobody:nogroup", m.image("vm1.qcow2").toString(), m.mnt.resolve("journals/vm1").toString());

            Path xml = work.resolve("vm1.xml");
            Path console = lv.resolve("console.log"); // QEMU's, as nobody
            Files.writeString(xml, domain(Files.readString(EXAMPLES.resolve("vm1.xml")), m, run, console));
            Proc.ok("chmod", "a+r", xml.toString());
            Poll.until(() -> virsh(env, "version").ok(), libvirtd::output, 30);
            virsh(env, "define", xml.toString()).assertOk();
            try {
                virsh(env, "start", "vm1").assertOk();
                long before = -1;
                long reclaimed = -1;
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(420);
                while (!virsh(env, "domstate", "vm1").out().contains("shut off") && System.nanoTime() < deadline) {
                    String out = read(console);
                    if (before < 0 && out.contains("vmfuse-guest: before delete")) {
                        before = Disk.allocated(m.backing("vm1.qcow2"));
                    }
                    if (reclaimed < 0 && out.contains("vmfuse-guest: notice acknowledged")) {
                        // online, through the example's second QMP socket: QEMU discards, the guest runs on
                        m.vmfuse("vm", "reclaim", "vm1", m.mnt.toString()).assertOk();
                        reclaimed = Disk.allocated(m.backing("vm1.qcow2"));
                    }
                    Thread.sleep(500);
                }
                String out = read(console);
                if (!out.contains("vmfuse-guest: exit 0")) {
                    fail("guest failed or did not finish; console:\n" + Proc.tail(out) + "\nlibvirt's log of it:\n"
                            + Proc.tail(read(lv.resolve("cache/libvirt/qemu/log/vm1.log"))) + "\n" + Proc.tail(m.log()));
                }
                assertTrue(before > 48 * MiB && reclaimed >= 0, "before " + before + ", reclaimed " + reclaimed);
                assertTrue(before - reclaimed >= 0.9 * 48 * MiB, "allocation " + before + " -> " + reclaimed
                        + " by the reclaim while the guest ran\n" + m.log());
                m.awaitLog("reclaim vm=vm1 image=vm1.qcow2 punched seq=1");
                assertTrue(out.contains("/data: ") && out.contains("trimmed"), Proc.tail(out));
                assertTrue(m.log().lines().anyMatch(l -> l.contains("release image=images/vm1-data.raw")
                        && l.contains("reason=punch-hole")), "fstrim through NBD released space\n" + m.log());
                // the script runs with sh -e: exit 0 means both fscks were clean and every sum matched
                assertTrue(out.contains("/mnt/data/keep3: OK"), Proc.tail(out));
                String status = m.vmfuse("status", m.mnt.toString()).assertOk().out();
                assertTrue(status.contains("vm1-data"), status);
            } finally {
                virsh(env, "destroy", "vm1");
                Proc.Result undefine = virsh(env, "undefine", "vm1");
                assertEquals(0, undefine.exit(), undefine.describe());
                assertTrue(virsh(env, "list", "--all", "--name").out().isBlank(), "undefined");
            }
        } finally {
            Proc.run("rm", "-rf", work.toString());
        }
    }

    /** The example, but for how it boots, its console, the script disk and its paths (the test's). */
    private static String domain(String example, Mounted m, Path run, Path console) {
        String xml = example;
        xml = replace(xml, "<domain type='kvm'", "<domain type='qemu'");
        xml = replace(xml, "<memory unit='MiB'>1024</memory>", "<memory unit='MiB'>384</memory>");
        xml = replace(xml, "    <boot dev='hd'/>\n", "    <kernel>" + run.resolve("vmlinuz") + "</kernel>\n"
                + "    <initrd>" + run.resolve("initramfs.gz") + "</initrd>\n"
                + "    <cmdline>console=ttyS0 quiet panic=-1</cmdline>\n");
        xml = replace(xml, "    <serial type='pty'/>\n    <console type='pty'/>\n",
                "    <serial type='file'><source path='" + console + "'/></serial>\n"
                        + "    <disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                        + "<source file='" + run.resolve("script.img") + "'/><target dev='vdd' bus='virtio'/>"
                        + "<readonly/></disk>\n");
        xml = replace(xml, "/srv/vmfuse", m.mnt.toString());
        return replace(xml, "/run/vmfuse", run.toString());
    }

    private static String replace(String s, String what, String with) {
        assertTrue(s.contains(what), "the example has no " + what);
        return s.replace(what, with);
    }

    private static Proc.Result virsh(String env, String... args) {
        List<String> cmd = new ArrayList<>(List.of("runuser", "-u", "nobody", "--", "sh", "-c",
                "exec env " + env + " virsh -c qemu:///session \"$@\"", "-"));
        cmd.addAll(List.of(args));
        return Proc.run(Duration.ofSeconds(60), cmd);
    }

    private static String read(Path p) {
        try {
            return Files.readString(p, StandardCharsets.UTF_8);
        } catch (java.io.IOException e) {
            return "(none: " + e + ")";
        }
    }
}
