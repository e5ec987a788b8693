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
    private static class Refusing implements DiskFile {
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

    /**
     * Two writers: one is inside its O_DIRECT write when the other's write is refused and the
     * O_DIRECT handle closed; the first's write then fails on the closed handle
     * (ClosedChannelException, not EINVAL) and must land through the plain handle all the same.
     */
    @Test
    void aWriteWhoseHandleAnotherWritersRefusalClosedLandsThroughThePlainHandle() throws Exception {
        Disk disk = RealDisk.of(null);
        Path file = dir.resolve("h");
        Files.write(file, new byte[0]);
        java.util.concurrent.CountDownLatch inside = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch closedIt = new java.util.concurrent.CountDownLatch(1);
        Refusing direct = new Refusing("Invalid argument") {
            @Override
            public int write(ByteBuffer src, long pos) throws IOException {
                if (Thread.currentThread().getName().equals("slow-writer")) {
                    inside.countDown();
                    try {
                        closedIt.await();
                    } catch (InterruptedException e) {
                        throw new IOException(e);
                    }
                    throw new java.nio.channels.ClosedChannelException(); // its channel closed under it
                }
                return super.write(src, pos);
            }

            @Override
            public void close() {
                super.close();
                closedIt.countDown();
            }
        };
        byte[] a = new byte[4096];
        byte[] b = new byte[4096];
        java.util.Arrays.fill(a, (byte) 'a');
        java.util.Arrays.fill(b, (byte) 'b');
        try (PageWrites pages = new PageWrites(direct, () -> disk.open(file, false))) {
            java.util.concurrent.atomic.AtomicReference<Throwable> failed = new java.util.concurrent.atomic.AtomicReference<>();
            Thread slow = new Thread(() -> {
                try {
                    pages.writeFully(ByteBuffer.wrap(b), 4096);
                } catch (Throwable e) {
                    failed.set(e);
                }
            }, "slow-writer");
            slow.start();
            assertTrue(inside.await(30, java.util.concurrent.TimeUnit.SECONDS));
            pages.writeFully(ByteBuffer.wrap(a), 0); // refused: the switch, which closes the O_DIRECT handle
            slow.join(30_000);
            if (failed.get() != null) {
                throw new AssertionError("the write whose handle was closed under it failed", failed.get());
            }
            pages.force(false);
        }
        byte[] back = Files.readAllBytes(file);
        assertArrayEquals(a, java.util.Arrays.copyOfRange(back, 0, 4096));
        assertArrayEquals(b, java.util.Arrays.copyOfRange(back, 4096, 8192));
    }
}
