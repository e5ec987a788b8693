package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.TreeMap;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The test guest (TCG) with its disks on the NBD door instead of the mount: QEMU's own NBD client
 * on nbd+unix:// drives, through the same core (punches released and counted, a journal device's
 * flush), and a drive with reconnect-delay riding through an unmount and a mount of the daemon.
 */
@Tag("integration")
class NbdGuestE2ETest {
    static final long MiB = 1 << 20;
    static final Duration BOOT = Duration.ofSeconds(240);

    Path socketDir;
    Path socket;
    Mounted m;

    @BeforeAll
    static void build() {
        Guest.build();
    }

    @BeforeEach
    void mount() throws Exception {
        socketDir = Files.createTempDirectory(Path.of("/tmp"), "vmfuse-nbd-guest-");
        socket = socketDir.resolve("nbd.sock");
        m = Mounted.prepare();
        m.mount("--nbd", "unix:" + socket);
    }

    @AfterEach
    void unmount() throws Exception {
        m.close();
        Proc.run("rm", "-rf", socketDir.toString());
    }

    /** A virtio drive on export {@code export} of the door, by URI. */
    private String nbdDrive(String export, String extra) {
        return "file=nbd+unix:///" + export + "?socket=" + socket + ",format=raw,if=virtio," + extra;
    }

    /**
     * ext4 on images/g.raw with its journal on journals/g, both over NBD: files written and synced
     * in one boot verify in the next, fsck is clean in the guest and on the host (through the
     * mount), and a deleted file's fstrim is punched in the image's backing file and counted.
     */
    @Test
    void aGuestOnNbdExportsKeepsItsFilesFsckIsCleanAndItsTrimsAreReleased() throws Exception {
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("g.raw").toString(), "256M");
        m.vmfuse("journal", "create", "--size", "16M", "g", m.mnt.toString()).assertOk();
        String[] drives = {nbdDrive("images/g.raw", "discard=unmap,cache=none"),
            nbdDrive("journals/g", "cache=none")};

        String first = Guest.run(m.root, String.join("\n",
                "/usr/sbin/mke2fs -q -O journal_dev -b 4096 /dev/vdb",
                "/usr/sbin/mke2fs -q -F -t ext4 -b 4096 -J device=/dev/vdb /dev/vda",
                "mount -t ext4 -o journal_path=/dev/vdb /dev/vda /mnt",
                "i=0; while [ $i -lt 100 ]; do dd if=/dev/urandom of=/mnt/f$i bs=4k count=$((i % 13 + 1)) 2>/dev/null; i=$((i+1)); done",
                "dd if=/dev/urandom of=/mnt/big bs=1M count=48 2>/dev/null",
                "cd /mnt && sha256sum f* > /mnt/SUMS && cd /",
                "sync && umount /mnt"), BOOT, drives);
        assertFalse(first.contains("I/O error"), first);
        long written = Disk.allocated(m.backing("g.raw"));
        assertTrue(written >= 48 * MiB, "the guest's data reached the image: " + written);

        // fsck on the host, through the mount: what NBD wrote is what the files hold
        Disk.fsckExternal(m.mnt.resolve("journals/g"), m.image("g.raw"));

        String second = Guest.run(m.root, String.join("\n",
                "/usr/sbin/e2fsck -fn -j /dev/vdb /dev/vda && echo fsck-clean",
                "mount -t ext4 -o journal_path=/dev/vdb /dev/vda /mnt",
                "cd /mnt && sha256sum -c SUMS | grep -c ': OK$' | sed 's/^/verified=/'",
                "rm /mnt/big && sync && /usr/sbin/fstrim -v /mnt",
                "cd / && umount /mnt"), BOOT, drives);
        assertTrue(second.contains("fsck-clean"), second);
        assertTrue(second.contains("verified=100"), second);
        long trimmed = Disk.allocated(m.backing("g.raw"));
        assertTrue(written - trimmed >= 0.9 * 48 * MiB, "fstrim over NBD gave back the deleted file's blocks: "
                + written + " -> " + trimmed + " bytes allocated\n" + second);
        String status = m.vmfuse("status", m.mnt.toString()).assertOk().out();
        assertTrue(status.lines().anyMatch(l -> l.startsWith("g.raw") && !l.matches("g\\.raw(\\s+\\d+){2}\\s+0\\s.*")),
                "status counts the release:\n" + status);
    }

    /** "fsynced N SHA" lines of a console, N to SHA. */
    private static Map<String, String> lines(String console, String word) {
        Map<String, String> out = new TreeMap<>();
        for (String line : console.split("\n")) {
            String[] f = line.trim().split(" ");
            if (f.length == 3 && f[0].equals(word)) {
                out.put(f[1], f[2]);
            }
        }
        return out;
    }

    /**
     * QEMU with reconnect-delay on its NBD drive; the guest writes files with fsync while the
     * daemon is unmounted (hanging up on QEMU) and mounted again: the guest sees no I/O error, and
     * every file reads back with the sum it had when written.
     */
    @Test
    void aGuestOnAReconnectingNbdDriveRidesThroughAnUnmountAndAMount() throws Exception {
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("r.raw").toString(), "128M");
        String drive = "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=" + socket
                + ",file.export=images/r.raw,file.reconnect-delay=60,if=virtio,cache=none";
        String script = String.join("\n",
                "/usr/sbin/mke2fs -q -F -t ext4 -b 4096 /dev/vda",
                "mount -t ext4 /dev/vda /mnt",
                "i=0; while [ $i -lt 150 ]; do",
                "  dd if=/dev/urandom of=/mnt/f$i bs=4k count=$((i % 7 + 1)) conv=fsync 2>/dev/null",
                "  echo \"fsynced $i $(sha256sum /mnt/f$i | cut -d' ' -f1)\"; i=$((i+1)); done",
                "umount /mnt && mount -t ext4 /dev/vda /mnt",
                "for f in /mnt/f*; do echo \"have $(basename $f | cut -c2-) $(sha256sum $f | cut -d' ' -f1)\"; done",
                "umount /mnt",
                "echo ioerrors=$(dmesg | grep -ci 'i/o error')");
        String console;
        try (Guest.Running g = Guest.start(m.root, script, drive)) {
            long deadline = System.nanoTime() + BOOT.toNanos();
            while (lines(g.console(), "fsynced").size() < 20) {
                assertTrue(System.nanoTime() < deadline && g.qemu().isAlive(), "guest stalled:\n" + g.console());
                Thread.sleep(200);
            }
            m.umount().assertOk(); // hangs up on QEMU; its requests wait for the reconnect
            int during = lines(g.console(), "fsynced").size();
            m.mount("--nbd", "unix:" + socket);
            assertTrue(g.qemu().waitFor(BOOT.toSeconds(), java.util.concurrent.TimeUnit.SECONDS),
                    "guest did not finish:\n" + g.console());
            console = g.console();
            assertTrue(during < 150, "the restart came while the guest wrote (" + during + " files done)");
        }
        assertTrue(console.contains("vmfuse-guest: exit 0"), console);
        assertTrue(console.contains("ioerrors=0"), "no I/O error in the guest:\n" + console);
        Map<String, String> fsynced = lines(console, "fsynced");
        assertEquals(150, fsynced.size(), console);
        assertEquals(fsynced, lines(console, "have"), "every file reads back as written");
        // it opened the export again, from the daemon mounted after the first was unmounted
        Poll.until(() -> m.log().split("export=images/r.raw open", -1).length - 1 >= 2, m::log);
    }
}
