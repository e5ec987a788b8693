package vmfuse.journal;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Arrays;
import java.util.Random;

/**
 * A plain byte array driven by the same seeded random operations as a journal device: writes
 * (partial blocks, whole blocks, zeros), punches, truncates that shrink and grow. The operations
 * depend only on the seed and the model, so a second model replays them exactly.
 */
final class DeviceModel {
    static final int SPACE = 4 << 20;
    private static final int B = RadixBlockStore.BLOCK_SIZE;

    final byte[] bytes = new byte[SPACE];
    long size;
    private final Random r;

    DeviceModel(long seed) {
        this.r = new Random(seed);
    }

    /** One random change, to the device if given and to the model; returns {offset, length} of what to read back. */
    long[] step(JournalDevice d) throws StoreException {
        int kind = r.nextInt(100);
        if (kind < 50) { // anywhere, any length
            int off = r.nextInt(SPACE - 1);
            int len = 1 + r.nextInt(Math.min(96 << 10, SPACE - off));
            return write(d, off, len, r.nextInt(10) == 0);
        } else if (kind < 70) { // whole blocks
            int blocks = 1 + r.nextInt(32);
            int off = r.nextInt(SPACE / B - blocks) * B;
            return write(d, off, blocks * B, r.nextInt(10) == 0);
        } else if (kind < 90) {
            int off = r.nextInt(SPACE);
            int len = r.nextInt(Math.min(1 << 20, SPACE - off) + 1);
            if (d != null) {
                d.zero(off, len);
            }
            Arrays.fill(bytes, off, off + len, (byte) 0);
            return new long[] {off, len};
        } else {
            int newSize = r.nextInt(SPACE + 1);
            if (d != null) {
                d.truncate(newSize);
            }
            if (newSize < size) {
                Arrays.fill(bytes, newSize, SPACE, (byte) 0);
            }
            size = newSize;
            return new long[] {Math.max(0, newSize - 5000), 10_000};
        }
    }

    private long[] write(JournalDevice d, int off, int len, boolean zeros) throws StoreException {
        byte[] data = new byte[len];
        if (!zeros) {
            r.nextBytes(data);
        }
        if (d != null) {
            d.write(off, data, 0, len);
        }
        System.arraycopy(data, 0, bytes, off, len);
        size = Math.max(size, off + len);
        return new long[] {off, len};
    }

    /** The device reads as the model in [offset, offset + length) (clipped to the space). */
    void checkRange(JournalDevice d, long offset, long length, String what) throws StoreException {
        int off = (int) Math.min(offset, SPACE);
        int len = (int) Math.min(length, SPACE - off);
        byte[] back = new byte[len];
        int n = d.read(off, back, 0, len);
        int expect = (int) Math.max(0, Math.min(len, size - off));
        assertEquals(expect, n, what + ": bytes read at " + off);
        assertArrayEquals(Arrays.copyOfRange(bytes, off, off + n), Arrays.copyOf(back, n), what + ": contents at " + off);
    }

    /** The device's size and every byte equal the model's. */
    void check(JournalDevice d, String what) throws StoreException {
        assertEquals(size, d.size(), what + ": size");
        checkRange(d, 0, SPACE, what);
    }

    /** Blocks below the size holding a non-zero byte. */
    long nonZeroBlocks() {
        long n = 0;
        for (int b = 0; b < SPACE; b += B) {
            for (int i = b; i < b + B; i++) {
                if (bytes[i] != 0) {
                    n++;
                    break;
                }
            }
        }
        return n;
    }
}
