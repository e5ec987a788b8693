package vmfuse.durable;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Disk.openForPageWrites on the machine's disk: whole pages written through it (O_DIRECT on a
 * disk's filesystem, the plain handle on tmpfs if it refuses) read back through the file's own
 * handle, past its old end and over pages the page cache held, and a force of the file takes them.
 */
class PageWritesTest {
    @ParameterizedTest
    @ValueSource(strings = {"/var/tmp", "/dev/shm"})
    void pagesWrittenThroughThePageHandleReadBackThroughTheFile(String where) throws Exception {
        Path dir = Files.createTempDirectory(Path.of(where), "pages");
        try {
            Disk disk = RealDisk.of(null);
            Path file = dir.resolve("f");
            byte[] model = new byte[6 * 4096];
            new Random(3).nextBytes(model);
            Arrays.fill(model, 2 * 4096, model.length, (byte) 0); // the file has two pages; page 4 stays a hole
            try (DiskFile main = disk.open(file, true)) {
                main.writeFully(ByteBuffer.wrap(model, 0, 2 * 4096), 0);
                ByteBuffer back = ByteBuffer.allocate(2 * 4096);
                main.read(back, 0); // the first two pages now in the page cache
                Random r = new Random(4);
                try (DiskFile pages = disk.openForPageWrites(file)) {
                    ByteBuffer b = Disk.alignedBuffer(3 * 4096);
                    byte[] some = new byte[3 * 4096];
                    r.nextBytes(some);
                    b.put(some).flip();
                    pages.writeFully(b, 4096); // over a cached page and past the end
                    System.arraycopy(some, 0, model, 4096, some.length);
                    b.clear().limit(4096);
                    pages.writeFully(b, 5 * 4096);
                    System.arraycopy(some, 0, model, 5 * 4096, 4096);
                }
                main.force(false);
                assertEquals(model.length, main.size());
                ByteBuffer all = ByteBuffer.allocate(model.length);
                while (all.hasRemaining() && main.read(all, all.position()) > 0) {
                    // read it all
                }
                assertArrayEquals(model, all.array());
            }
            assertArrayEquals(model, Arrays.copyOf(Files.readAllBytes(file), model.length));
        } finally {
            try (var walk = Files.walk(dir)) {
                walk.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }
}
