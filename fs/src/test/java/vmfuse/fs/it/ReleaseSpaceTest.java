package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Interception of fallocate and unlink: space released in the backing store at once, seen as a
 * user sees it (st_blocks of the backing file, free space of the backing filesystem).
 */
@Tag("integration")
class ReleaseSpaceTest {
    static final long MiB = 1 << 20;
    static Mounted m;

    @BeforeAll
    static void mount() throws Exception {
        m = Mounted.onTmpfs("512m"); // its own filesystem: free space moves only with what we do
    }

    @AfterAll
    static void unmount() throws Exception {
        m.close();
    }

    @Test
    void qemuIoDiscardOnRawReleasesBackingBlocks() {
        Proc.ok("qemu-img", "create", "-f", "raw", m.image("d.raw").toString(), "32M");
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x61 0 16M", m.image("d.raw").toString());
        long before = Disk.allocated(m.backing("d.raw"));
        assertTrue(before >= 16 * MiB, "allocated " + before);

        Proc.ok("qemu-io", "-f", "raw", "-c", "discard 4M 8M", m.image("d.raw").toString());

        long after = Disk.allocated(m.backing("d.raw"));
        assertEquals(8 * MiB, before - after, "bytes released by an 8 MiB discard");
        Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 0x61 0 4M", "-c", "read -P 0 4M 8M", "-c", "read -P 0x61 12M 4M",
                m.image("d.raw").toString());
    }

    @Test
    void qemuIoDiscardOnQcow2WithDiscardUnmapReleasesBackingBlocks() {
        Proc.ok("qemu-img", "create", "-f", "qcow2", m.image("d.qcow2").toString(), "1G");
        Proc.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x62 0 16M", m.image("d.qcow2").toString());
        long before = Disk.allocated(m.backing("d.qcow2"));

        Proc.ok("qemu-io", "-f", "qcow2", "-d", "unmap", "-c", "discard 0 8M", m.image("d.qcow2").toString());

        long after = Disk.allocated(m.backing("d.qcow2"));
        assertTrue(before - after >= 8 * MiB, "released " + (before - after) + " of an 8 MiB discard");
        Proc.ok("qemu-io", "-f", "qcow2", "-c", "read -P 0x62 8M 8M", "-c", "read -P 0 0 8M", m.image("d.qcow2").toString());
        Proc.ok("qemu-img", "check", m.image("d.qcow2").toString());
        String status = m.vmfuse("status", m.mnt.toString()).assertOk().out();
        assertTrue(status.lines().anyMatch(l -> l.startsWith("d.qcow2") && l.contains(String.valueOf(before - after))),
                "status shows the released bytes:\n" + status);
    }

    @Test
    void fallocatePunchAndZeroReleaseBlocksAndReadAsZeros() throws Exception {
        Path img = m.image("f.raw");
        Proc.ok("dd", "if=/dev/urandom", "of=" + img, "bs=1M", "count=12", "conv=fsync", "status=none");
        assertEquals(12 * MiB, Disk.allocated(m.backing("f.raw")));
        byte[] whole = Files.readAllBytes(img);

        Proc.ok("fallocate", "-p", "-o", String.valueOf(2 * MiB), "-l", String.valueOf(3 * MiB), img.toString());
        assertEquals(9 * MiB, Disk.allocated(m.backing("f.raw")), "after punching 3 MiB");
        Proc.ok("fallocate", "-z", "-o", String.valueOf(8 * MiB), "-l", String.valueOf(2 * MiB), img.toString());
        assertEquals(7 * MiB, Disk.allocated(m.backing("f.raw")), "after zeroing 2 MiB");
        assertEquals(12 * MiB, Files.size(img), "punch and zero keep the size");

        byte[] now = Files.readAllBytes(img);
        for (int i = 0; i < now.length; i++) {
            boolean released = (i >= 2 * MiB && i < 5 * MiB) || (i >= 8 * MiB && i < 10 * MiB);
            if (now[i] != (released ? 0 : whole[i])) {
                throw new AssertionError("byte " + i + " is " + now[i] + ", expected " + (released ? 0 : whole[i]));
            }
        }
    }

    @Test
    void zeroRangePastTheEndGrowsTheFileWithoutAllocating() throws Exception {
        Path img = m.image("z.raw");
        Proc.ok("dd", "if=/dev/urandom", "of=" + img, "bs=1M", "count=1", "status=none");
        Proc.ok("fallocate", "-z", "-o", String.valueOf(MiB / 2), "-l", String.valueOf(4 * MiB), img.toString());
        assertEquals(MiB / 2 + 4 * MiB, Files.size(img));
        assertEquals(MiB / 2, Disk.allocated(m.backing("z.raw")));
        Proc.ok("fallocate", "-l", String.valueOf(8 * MiB), img.toString()); // mode 0: allocation passes through
        assertEquals(8 * MiB, Disk.allocated(m.backing("z.raw")));
        assertEquals(8 * MiB, Files.size(img));
    }

    @Test
    void fallocateModesThatMoveDataAreRefusedAndChangeNothing() throws Exception {
        Path img = m.image("c.raw");
        Proc.ok("dd", "if=/dev/urandom", "of=" + img, "bs=1M", "count=2", "status=none");
        String sum = Disk.sha256(img);
        Proc.Result r = Proc.run("fallocate", "-c", "-o", "0", "-l", "65536", img.toString());
        assertFalse(r.ok(), "collapse-range must be refused");
        assertTrue(r.err().contains("Operation not supported"), r.describe());
        assertEquals(sum, Disk.sha256(img));
        assertEquals(2 * MiB, Files.size(img));
    }

    @Test
    void unlinkFreesBackingSpaceAtOnceAndLeavesNoHiddenFiles() throws Exception {
        Path img = m.image("u.raw");
        Proc.ok("dd", "if=/dev/urandom", "of=" + img, "bs=1M", "count=64", "status=none");
        long freeBefore = Disk.free(m.store);
        Files.delete(img);
        long freed = Disk.free(m.store) - freeBefore;
        assertTrue(freed >= 64 * MiB, "freed " + freed);
        assertFalse(Files.exists(m.backing("u.raw")));
        assertNoHiddenFiles();
    }

    @Test
    void unlinkOfAnOpenImageFreesSpaceWhenTheLastHolderCloses() throws Exception {
        Path img = m.image("o.raw");
        Proc.ok("dd", "if=/dev/urandom", "of=" + img, "bs=1M", "count=32", "status=none");
        try (Proc.Background holder = Proc.start("sh", "-c", "exec 3<'" + img + "'; echo open; exec sleep 60")) {
            Poll.until(() -> holder.output().contains("open"), () -> "the holder opens the image: " + holder.output());
            long freeBefore = Disk.free(m.store);
            Files.delete(img);
            assertFalse(Files.exists(img));
            assertFalse(Files.exists(m.backing("o.raw")), "the name is gone at once");
            assertNoHiddenFilesIn(m.mnt.resolve("images")); // libfuse's hidden name is never listed
            assertTrue(Disk.free(m.store) - freeBefore < 32 * MiB, "space is still held by the open file");
            holder.close();
            // less a page or two: the store's own log and ledger, on the same tmpfs, grow meanwhile
            Poll.until(() -> Disk.free(m.store) - freeBefore >= 31 * MiB, () -> "32 MiB freed at the last close");
            assertNoHiddenFiles(); // the hidden backing file went with the last close
        }
    }

    @Test
    void anUnlinkedOpenImageStaysReadableAndWritable() throws Exception {
        Path img = m.image("rw.raw");
        Proc.ok("qemu-img", "create", "-f", "raw", img.toString(), "4M");
        // open, unlink, then write, read back, stat and fsync through the same descriptor
        Proc.Result r = Proc.ok("python3", "-c", String.join("\n",
                "import os, sys",
                "fd = os.open(sys.argv[1], os.O_RDWR)",
                "os.unlink(sys.argv[1])",
                "assert os.pwrite(fd, b'vmfuse', 4096) == 6",
                "os.fsync(fd)",
                "print(os.pread(fd, 6, 4096).decode(), os.fstat(fd).st_size, os.path.exists(sys.argv[1]))"),
                img.toString());
        assertEquals("vmfuse 4194304 False", r.out().trim(), r.describe());
        assertNoHiddenFiles();
    }

    /** The process that held the file has exited; its FUSE release, which removes the hidden file, may still be on its way. */
    private static void assertNoHiddenFiles() throws IOException {
        assertNoHiddenFilesIn(m.mnt.resolve("images"));
        Poll.until(() -> hiddenIn(m.store.resolve("images")) == 0, () -> "a .fuse_hidden file left in the store");
    }

    static long hiddenIn(Path dir) {
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(p -> p.getFileName().toString().startsWith(".fuse_hidden")).count();
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private static void assertNoHiddenFilesIn(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().startsWith(".fuse_hidden")),
                    "a .fuse_hidden file in " + dir);
        }
    }
}
