package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Issue 13's promise end to end, with the store on a real disk that fails or loses power
 * ({@link NbdDisk}): every flush either fails or survives, nothing flushed before is lost, and
 * the daemon says what happened.
 */
@Tag("integration")
class StoreDiskFaultTest {
    static final long MiB = 1 << 20;

    /** Writes {@code len} bytes of seed {@code seed} at {@code off}, fdatasyncs; true if both succeeded. */
    private static boolean writeAndSync(Path p, long off, int len, int seed) {
        return Proc.run("python3", "-c", String.join("\n",
                "import os, sys, random",
                "random.seed(int(sys.argv[4]))",
                "data = random.randbytes(int(sys.argv[3]))",
                "fd = os.open(sys.argv[1], os.O_WRONLY)",
                "os.pwrite(fd, data, int(sys.argv[2]))",
                "os.fdatasync(fd)"),
                p.toString(), String.valueOf(off), String.valueOf(len), String.valueOf(seed)).ok();
    }

    /** Whether [off, off + len) of {@code p} holds what {@link #writeAndSync} wrote with {@code seed}. */
    private static boolean holds(Path p, long off, int len, int seed) {
        return Proc.run("python3", "-c", String.join("\n",
                "import os, sys, random",
                "random.seed(int(sys.argv[4]))",
                "fd = os.open(sys.argv[1], os.O_RDONLY)",
                "sys.exit(0 if os.pread(fd, int(sys.argv[3]), int(sys.argv[2])) == random.randbytes(int(sys.argv[3])) else 1)"),
                p.toString(), String.valueOf(off), String.valueOf(len), String.valueOf(seed)).ok();
    }

    @Test
    void onAFailingDiskEveryFlushFailsOrSurvivesAndNothingFlushedBeforeIsLost() throws Exception {
        try (Mounted m = Mounted.prepare(); NbdDisk disk = NbdDisk.create(m.store, "256M")) {
            m.mount();
            m.vmfuse("journal", "create", "--size", "16M", "j", m.mnt.toString()).assertOk();
            Path j = m.mnt.resolve("journals/j");
            assertTrue(writeAndSync(j, 0, (int) MiB, 1), "a flush on a healthy disk");

            disk.failing(true);
            boolean second = writeAndSync(j, MiB, (int) MiB, 2);
            disk.failing(false);
            boolean third = writeAndSync(j, 2 * MiB, (int) MiB, 3);
            assertFalse(second, "a flush while the disk fails every write");
            assertFalse(third, "a flush after one failed: the kernel reported the error once, a later fdatasync "
                    + "would return 0 without the data on disk");
            assertTrue(m.log().contains("fdatasync failed"), "the daemon says what happened:\n" + m.log());

            Proc.Result umount = m.umount();
            // the journal store commits at unmount (the disk works again); the final sync of the store's
            // filesystem reports the write error it met: the operator hears of it
            assertNotEquals(0, umount.exit(), umount.describe());
            assertTrue(umount.err().contains("final sync failed"), umount.describe());

            m.mount();
            assertTrue(holds(j, 0, (int) MiB, 1), "flushed before the disk failed");
            assertTrue(writeAndSync(j, 3 * MiB, (int) MiB, 4), "mounted again, flushes work");
            m.umount().assertOk();
        }
    }

    @Test
    void afterAPowerCutOfTheStoreDiskEverythingSyncedIsThere() throws Exception {
        try (Mounted m = Mounted.prepare(); NbdDisk disk = NbdDisk.create(m.store, "256M")) {
            m.mount();
            m.vmfuse("journal", "create", "--size", "16M", "j", m.mnt.toString()).assertOk();
            Path j = m.mnt.resolve("journals/j");
            assertTrue(writeAndSync(j, 0, (int) MiB, 1));
            Proc.ok("qemu-img", "create", "-f", "raw", m.image("a.raw").toString(), "8M");
            assertTrue(writeAndSync(m.image("a.raw"), 0, (int) MiB, 5));
            Proc.ok("mv", m.image("a.raw").toString(), m.image("b.raw").toString());
            Proc.ok("python3", "-c", "import os, sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))",
                    m.mnt.resolve("images").toString());
            assertTrue(writeAndSync(j, MiB, (int) MiB, 2));

            disk.cut(); // the host loses power: the disk keeps what it was given
            m.daemonPid().flatMap(ProcessHandle::of).ifPresent(Proc::kill);
            Proc.run("fusermount", "-u", "-z", m.mnt.toString());
            disk.attachAgain();
            m.mount();

            assertTrue(holds(j, 0, (int) MiB, 1) && holds(j, MiB, (int) MiB, 2), "fdatasynced journal writes");
            assertTrue(Files.exists(m.image("b.raw")), "renamed, then images/ fsynced");
            assertFalse(Files.exists(m.image("a.raw")), "the name it was renamed from");
            assertTrue(holds(m.image("b.raw"), 0, (int) MiB, 5), "the image's fdatasynced data");
            assertEquals(8 * MiB, Files.size(m.image("b.raw")));
            m.umount().assertOk();
        }
    }
}
