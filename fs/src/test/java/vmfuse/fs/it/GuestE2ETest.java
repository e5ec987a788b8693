package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** A real guest booted from the mount (QEMU, TCG): the whole path, end to end. */
@Tag("integration")
@Tag("e2e")
class GuestE2ETest {
    static final long MiB = 1 << 20;
    static final Duration BOOT = Duration.ofSeconds(240);

    @BeforeAll
    static void build() {
        Guest.build();
    }

    /**
     * ext4 on an image of the mount, its journal on a vmfuse journal device: files written and
     * synced in one boot are all there, with the same checksums, in the next; fsck is clean in the
     * guest and (raw) on the host.
     */
    @ParameterizedTest
    @ValueSource(strings = {"raw", "qcow2"})
    void ext4WithItsJournalOnAVmfuseDeviceSurvivesARebootWithCleanFsck(String format) throws Exception {
        try (Mounted m = Mounted.create()) {
            String[] drives = dataAndJournal(m, "e2e", format);
            Path data = m.image("e2e." + format);
            Path journal = m.mnt.resolve("journals/e2e");

            String first = Guest.run(m.root, MKFS_EXTERNAL + "\n" + String.join("\n",
                    "mount -t ext4 /dev/vda /mnt",
                    "i=0; while [ $i -lt 150 ]; do dd if=/dev/urandom of=/mnt/f$i bs=4k count=$((i % 13 + 1)) 2>/dev/null; i=$((i+1)); done",
                    "cd /mnt && sha256sum f* > /mnt/SUMS && cd /",
                    "echo files=$(ls /mnt | wc -l)",
                    "sync && umount /mnt"), BOOT, drives);
            assertTrue(first.contains("files=152"), first); // 150, SUMS and lost+found

            if (format.equals("raw")) {
                Disk.fsckExternal(journal, data);
            }

            String second = Guest.run(m.root, String.join("\n",
                    "/usr/sbin/e2fsck -fn -j /dev/vdb /dev/vda",
                    "mount -t ext4 -o journal_path=/dev/vdb /dev/vda /mnt",
                    "cd /mnt && sha256sum -c SUMS | grep -c ': OK$' | sed 's/^/verified=/'",
                    "cd / && umount /mnt"), BOOT, drives);
            assertTrue(second.contains("verified=150"), second);
            assertTrue(Proc.ok("stat", "-c", "%b", journal.toString()).out().trim().length() > 0);
        }
    }

    /**
     * A guest that discards: it writes 64 MiB, deletes it and runs fstrim; with discard=unmap the
     * image's backing file gives back at least 90% of that on the host.
     */
    @ParameterizedTest
    @ValueSource(strings = {"raw", "qcow2"})
    void fstrimInTheGuestShrinksTheBackingFile(String format) throws Exception {
        try (Mounted m = Mounted.create()) {
            Path img = m.image("trim." + format);
            Proc.ok("qemu-img", "create", "-f", format, img.toString(), "256M");
            String drive = Guest.drive(img, format, "discard=unmap,cache=writeback");
            Guest.run(m.root, String.join("\n",
                    "/usr/sbin/mke2fs -q -F -t ext4 -b 4096 /dev/vda",
                    "mount -t ext4 /dev/vda /mnt",
                    "dd if=/dev/urandom of=/mnt/big bs=1M count=64 2>/dev/null",
                    "sync && umount /mnt"), BOOT, drive);
            long written = Disk.allocated(m.backing("trim." + format));

            String out = Guest.run(m.root, String.join("\n",
                    "mount -t ext4 /dev/vda /mnt",
                    "rm /mnt/big && sync",
                    "/usr/sbin/fstrim -v /mnt",
                    "umount /mnt"), BOOT, drive);
            long trimmed = Disk.allocated(m.backing("trim." + format));
            assertTrue(written - trimmed >= 0.9 * 64 * MiB,
                    "backing file went from " + written + " to " + trimmed + " bytes allocated\n" + out);
            String status = m.vmfuse("status", m.mnt.toString()).assertOk().out();
            assertTrue(status.lines().anyMatch(l -> l.startsWith("trim." + format)), status);
            if (format.equals("qcow2")) {
                assertEquals(0, Proc.run("qemu-img", "check", img.toString()).exit(), "qemu-img check");
            }
        }
    }

    /**
     * A 256 MiB data image NAME.FORMAT and a 16 MiB journal device NAME in the mount; returns
     * their drive specs (vda, vdb), both cache=none.
     */
    private static String[] dataAndJournal(Mounted m, String name, String format) {
        Path data = m.image(name + "." + format);
        Proc.ok("qemu-img", "create", "-f", format, data.toString(), "256M");
        m.vmfuse("journal", "create", "--size", "16M", name, m.mnt.toString()).assertOk();
        return new String[] {Guest.drive(data, format, "cache=none"),
            Guest.drive(m.mnt.resolve("journals/" + name), "raw", "cache=none")};
    }

    /** Formats vda as ext4 with its journal on vdb (a vmfuse journal device). */
    private static final String MKFS_EXTERNAL = String.join("\n",
            "/usr/sbin/mke2fs -q -O journal_dev -b 4096 /dev/vdb",
            "/usr/sbin/mke2fs -q -F -t ext4 -b 4096 -J device=/dev/vdb /dev/vda");

    /** Writes files f0, f1, ... each with an fsync, printing "fsynced N SHA" once each is durable. */
    private static final String WRITE_FSYNCED_FOREVER = String.join("\n",
            "mount -t ext4 /dev/vda /mnt",
            "i=0",
            "while true; do",
            "  dd if=/dev/urandom of=/mnt/f$i bs=4k count=$((i % 7 + 1)) conv=fsync 2>/dev/null",
            "  echo \"fsynced $i $(sha256sum /mnt/f$i | cut -d' ' -f1)\"",
            "  i=$((i+1))",
            "done");

    /** After a crash: mount (the kernel replays the journal from vdb), unmount, fsck, print every file's sum. */
    private static final String RECOVER_AND_LIST = String.join("\n",
            "mount -t ext4 -o journal_path=/dev/vdb /dev/vda /mnt",
            "umount /mnt",
            "/usr/sbin/e2fsck -fn -j /dev/vdb /dev/vda && echo fsck-clean",
            "mount -t ext4 -o journal_path=/dev/vdb /dev/vda /mnt",
            "for f in /mnt/f*; do echo \"have $(basename $f | cut -c2-) $(sha256sum $f | cut -d' ' -f1)\"; done",
            "umount /mnt");

    /** The "fsynced N SHA" lines of a console, as N -> SHA. */
    private static java.util.Map<String, String> fsynced(String console, String word) {
        java.util.Map<String, String> m = new java.util.TreeMap<>();
        for (String line : console.split("\n")) {
            String[] f = line.trim().split(" ");
            if (f.length == 3 && f[0].equals(word)) {
                m.put(f[1], f[2]);
            }
        }
        return m;
    }

    /**
     * QEMU killed with -9 while the guest writes with fsync; the daemon keeps running. The next
     * boot replays the ext4 journal from the vmfuse journal device, fsck is clean, and every file
     * fsynced before the kill is intact.
     *
     * <p>On a raw image. With a qcow2 data image and an external journal, the guest's fsync did
     * not flush the data disk, and QEMU keeps qcow2's L2 tables in memory until a flush: files
     * fsynced before the kill read back as zeros, on a plain local directory exactly as on
     * vmfuse (measured; README, "Journal devices").
     */
    @org.junit.jupiter.api.Test
    void aVmCrashLosesNothingThatWasFsynced() throws Exception {
        try (Mounted m = Mounted.create()) {
            String[] drives = dataAndJournal(m, "crash", "raw");
            Guest.run(m.root, MKFS_EXTERNAL, BOOT, drives);

            java.util.Map<String, String> before;
            try (Guest.Running g = Guest.start(m.root, WRITE_FSYNCED_FOREVER, drives)) {
                long deadline = System.nanoTime() + BOOT.toNanos();
                while (fsynced(g.console(), "fsynced").size() < 25) {
                    assertTrue(System.nanoTime() < deadline && g.qemu().isAlive(), "guest stalled:\n" + g.console());
                    Thread.sleep(200);
                }
                before = fsynced(g.console(), "fsynced"); // then kill -9 by close()
            }
            assertTrue(m.daemonPid().flatMap(ProcessHandle::of).map(ProcessHandle::isAlive).orElse(false),
                    "the daemon keeps running");

            String after = Guest.run(m.root, RECOVER_AND_LIST, BOOT, drives);
            assertTrue(after.contains("fsck-clean"), after);
            java.util.Map<String, String> have = fsynced(after, "have");
            for (var e : before.entrySet()) {
                assertEquals(e.getValue(), have.get(e.getKey()), "file f" + e.getKey() + " fsynced before the crash\n" + after);
            }
        }
    }

    /** kill -9 of the daemon with no guest running, a mount with --force, and the same holds. */
    @org.junit.jupiter.api.Test
    void aDaemonCrashLosesNothingThatWasFsynced() throws Exception {
        try (Mounted m = Mounted.create()) {
            String[] drives = dataAndJournal(m, "dcrash", "raw");
            String first = Guest.run(m.root, MKFS_EXTERNAL + "\n" + String.join("\n",
                    "mount -t ext4 /dev/vda /mnt",
                    "i=0; while [ $i -lt 40 ]; do",
                    "  dd if=/dev/urandom of=/mnt/f$i bs=4k count=$((i % 7 + 1)) conv=fsync 2>/dev/null",
                    "  echo \"fsynced $i $(sha256sum /mnt/f$i | cut -d' ' -f1)\"; i=$((i+1)); done",
                    "umount /mnt"), BOOT, drives);
            java.util.Map<String, String> before = fsynced(first, "fsynced");
            assertEquals(40, before.size(), first);

            ProcessHandle.of(m.daemonPid().orElseThrow()).ifPresent(Proc::kill);
            m.mount("--force");

            String after = Guest.run(m.root, RECOVER_AND_LIST, BOOT, drives);
            assertTrue(after.contains("fsck-clean"), after);
            assertEquals(before, fsynced(after, "have"), after);
        }
    }
}
