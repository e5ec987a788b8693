package vmfuse.durable;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The page handle where a filesystem takes O_DIRECT at open and refuses its writes (EINVAL, as on
 * a block size above 4 KiB, which this machine cannot mount): the refused write and every later
 * one go through the plain handle, and land; another error is the caller's, with no fallback.
 */
class PageWritesFallbackTest {
    @TempDir
    Path dir;

    /** A handle whose writes fail with {@code message}, counting them and whether it was closed. */
    private static final class Refusing implements DiskFile {
        final String message;
        final AtomicInteger writes = new AtomicInteger();
        volatile boolean closed;

        Refusing(String message) {
            this.message = message;
        }

        @Override
        public int read(ByteBuffer dst, long pos) throws IOException {
            throw new IOException(message);
        }

        @Override
        public int write(ByteBuffer src, long pos) throws IOException {
            writes.incrementAndGet();
            throw new IOException(message);
        }

        @Override
        public void force(boolean metadata) {
        }

        @Override
        public void truncate(long size) {
        }

        @Override
        public long size() {
            return 0;
        }

        @Override
        public boolean punch(long offset, long length) {
            return false;
        }

        @Override
        public void close() {
            closed = true;
        }
    }

    @Test
    void writesRefusedWithEinvalGoThroughThePlainHandle() throws Exception {
        Disk disk = RealDisk.of(null);
        Path file = dir.resolve("f");
        Refusing direct = new Refusing("Invalid argument");
        byte[] model = new byte[3 * 4096];
        new java.util.Random(5).nextBytes(model);
        try (DiskFile f = disk.open(file, true); PageWrites pages = new PageWrites(direct, () -> disk.open(file, false))) {
            pages.writeFully(ByteBuffer.wrap(model, 0, 8192), 0);
            assertTrue(pages.fellBack());
            assertTrue(direct.closed, "the refused handle is closed");
            pages.writeFully(ByteBuffer.wrap(model, 8192, 4096), 8192);
            assertEquals(1, direct.writes.get(), "once refused, O_DIRECT is not tried again");
            pages.force(false);
            assertEquals(model.length, f.size());
        }
        assertArrayEquals(model, Files.readAllBytes(file));
    }

    @Test
    void anotherErrorIsTheCallersAndWritesStayDirect() throws Exception {
        Disk disk = RealDisk.of(null);
        Path file = dir.resolve("g");
        Files.write(file, new byte[0]);
        Refusing direct = new Refusing("Input/output error");
        try (PageWrites pages = new PageWrites(direct, () -> disk.open(file, false))) {
            IOException e = assertThrows(IOException.class, () -> pages.writeFully(ByteBuffer.allocate(4096), 0));
            assertEquals("Input/output error", e.getMessage());
            assertFalse(pages.fellBack());
            assertFalse(direct.closed);
            assertThrows(IOException.class, () -> pages.writeFully(ByteBuffer.allocate(4096), 0));
            assertEquals(2, direct.writes.get());
        }
        assertTrue(direct.closed, "closed with the page handle");
        assertEquals(0, Files.size(file), "nothing written through the plain handle");
    }
}
