package vmfuse.journal;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.Arrays;
import java.util.Random;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.mapdb.DB;
import org.mapdb.DBMaker;

class RadixBlockStoreTest {
    static final int B = RadixBlockStore.BLOCK_SIZE;
    DB db;

    @BeforeEach
    void open() {
        db = DBMaker.memoryDB().make();
    }

    @AfterEach
    void close() {
        db.close();
    }

    /** Live records in the MapDB store (a deleted record's id stays listed, but it cannot be read). */
    private long records() {
        long n = 0;
        org.mapdb.Store store = db.getStore();
        for (var it = ((org.mapdb.StoreDirect) store).getAllRecids(); it.hasNext(); ) {
            long recid = it.next();
            try {
                if (store.get(recid, org.mapdb.Serializer.BYTE_ARRAY_NOSIZE) != null) {
                    n++;
                }
            } catch (org.mapdb.DBException e) {
                // deleted
            }
        }
        return n;
    }

    @Test
    void anEmptyStoreIsOnlyItsRootAndReadsAsZeros() throws Exception {
        long before = records();
        RadixBlockStore s = RadixBlockStore.create(db.getStore());
        assertEquals(before + 1, records());
        assertEquals(1, s.nodesStored());
        assertEquals(0, s.blocksStored());
        byte[] buf = new byte[3 * B + 17];
        Arrays.fill(buf, (byte) 7);
        s.read(12345, buf, 0, buf.length);
        assertArrayEquals(new byte[buf.length], buf);
    }

    @Test
    void writingZerosStoresNothingAndZeroingFreesEverything() throws Exception {
        long before = records();
        RadixBlockStore s = RadixBlockStore.create(db.getStore());
        s.write(0, new byte[10 * B], 0, 10 * B);
        assertEquals(0, s.blocksStored());
        assertEquals(before + 1, records());

        byte[] data = new byte[5 * B];
        new Random(1).nextBytes(data);
        s.write(1L << 40, data, 0, data.length);
        assertEquals(5, s.blocksStored());
        assertEquals(before + 1 + 5 + 5, records(), "5 blocks and 5 nodes below the root");

        s.zero((1L << 40) + 100, 5L * B - 200); // partial ends: two blocks stay
        assertEquals(2, s.blocksStored());
        s.zero(1L << 40, 100);
        s.zero((1L << 40) + 5L * B - 100, 100);
        assertEquals(0, s.blocksStored());
        assertEquals(1, s.nodesStored());
        assertEquals(before + 1, records(), "only the root is left");
    }

    @Test
    void aBlockOverwrittenWithZerosIsFreedWithItsEmptyNodes() throws Exception {
        RadixBlockStore s = RadixBlockStore.create(db.getStore());
        byte[] one = new byte[B];
        one[4095] = 1;
        s.write(7L * B, one, 0, B);
        assertEquals(6, s.nodesStored());
        byte[] zero = new byte[1];
        s.write(8L * B - 1, zero, 0, 1);
        assertEquals(0, s.blocksStored());
        assertEquals(1, s.nodesStored());
    }

    @Test
    void theLastBytesBelowTwoToTheSixtyThreeWork() throws Exception {
        RadixBlockStore s = RadixBlockStore.create(db.getStore());
        byte[] data = "end of the address space".getBytes();
        long at = RadixBlockStore.CAPACITY - data.length;
        s.write(at, data, 0, data.length);
        byte[] back = new byte[data.length];
        s.read(at, back, 0, back.length);
        assertArrayEquals(data, back);
        assertEquals(StoreException.EFBIG, assertThrows(StoreException.class, () -> s.write(at + 1, data, 0, data.length)).errno());
        assertEquals(StoreException.EFBIG, assertThrows(StoreException.class, () -> s.read(Long.MAX_VALUE, back, 0, 1)).errno());
        assertEquals(StoreException.EINVAL, assertThrows(StoreException.class, () -> s.zero(-1, 1)).errno());
        assertEquals(StoreException.EINVAL, assertThrows(StoreException.class, () -> s.zero(0, -1)).errno());
        s.zero(0, RadixBlockStore.CAPACITY); // the whole space at once: walks only what exists
        assertEquals(0, s.blocksStored());
        assertEquals(1, s.nodesStored());
    }

    @Test
    void reopeningFindsEveryBlockAndNode() throws Exception {
        RadixBlockStore s = RadixBlockStore.create(db.getStore());
        byte[] data = new byte[3 * B];
        new Random(2).nextBytes(data);
        s.write(5000, data, 0, data.length);
        s.write(1L << 50, data, 0, 10);
        s.flushNodes(); // what the owner does before it commits
        RadixBlockStore again = RadixBlockStore.open(db.getStore(), s.rootRecid());
        assertEquals(s.blocksStored(), again.blocksStored());
        assertEquals(s.nodesStored(), again.nodesStored());
        byte[] back = new byte[data.length];
        again.read(5000, back, 0, back.length);
        assertArrayEquals(data, back);
    }

    @Test
    void blocksCanBeReadWrittenAndCountedWhole() throws Exception {
        RadixBlockStore s = RadixBlockStore.create(db.getStore());
        byte[] b = new byte[B];
        b[17] = 3;
        s.writeBlock(10, b);
        s.writeBlock(600, b);
        s.writeBlock(1L << 40, b);
        b[17] = 4; // the store took a copy
        assertEquals(3, s.readBlock(10)[17]);
        assertEquals(null, s.readBlock(11));
        assertEquals(3, s.countRange(0, Long.MAX_VALUE >>> 12));
        assertEquals(2, s.countRange(10, 601));
        assertEquals(1, s.countRange(11, 601));
        assertEquals(0, s.countRange(11, 600));
        s.writeBlock(600, new byte[B]); // zeros: deleted
        assertEquals(2, s.blocksStored());
        assertEquals(false, s.contains(600));
    }

    @Test
    void aCorruptNodeIsRefusedWithItsRecordNamed() {
        long bogus = db.getStore().put(new long[] {1, 2, 3}, org.mapdb.Serializer.LONG_ARRAY);
        StoreException e = assertThrows(StoreException.class, () -> RadixBlockStore.open(db.getStore(), bogus));
        assertEquals(StoreException.EIO, e.errno());
        assertEquals("corrupt block store: node record " + bogus + " at level 0 is 3 ids, not 512", e.getMessage());
    }

    @Test
    void destroyDeletesEveryRecord() throws Exception {
        long before = records();
        RadixBlockStore s = RadixBlockStore.create(db.getStore());
        byte[] data = new byte[64 * B];
        new Random(3).nextBytes(data);
        s.write(0, data, 0, data.length);
        s.write(1L << 45, data, 0, data.length);
        s.destroy();
        assertEquals(before, records());
    }

    /**
     * Long random sequences of write / read / zero over a 1 MiB window, against a plain byte
     * array: contents equal after every step, and the store holds exactly the non-zero blocks.
     */
    @ParameterizedTest(name = "seed {0}")
    @ValueSource(longs = {1, 2, 3, 42, 1234567})
    void behavesLikeAByteArray(long seed) throws Exception {
        Random r = new Random(seed);
        int size = 1 << 20;
        long base = seed % 2 == 0 ? 0 : (1L << 62) + 3 * B + 5; // unaligned window high in the space
        byte[] model = new byte[size];
        RadixBlockStore s = RadixBlockStore.create(db.getStore());
        for (int step = 0; step < 2000; step++) {
            int off = r.nextInt(size);
            int len = Math.min(size - off, r.nextInt(4) == 0 ? r.nextInt(5 * B) : r.nextInt(600));
            switch (r.nextInt(4)) {
                case 0, 1 -> {
                    byte[] d = new byte[len];
                    if (r.nextInt(5) > 0) {
                        r.nextBytes(d);
                    } // else: a write of zeros
                    s.write(base + off, d, 0, len);
                    System.arraycopy(d, 0, model, off, len);
                }
                case 2 -> {
                    s.zero(base + off, len);
                    Arrays.fill(model, off, off + len, (byte) 0);
                }
                default -> {
                    byte[] got = new byte[len];
                    s.read(base + off, got, 0, len);
                    assertArrayEquals(Arrays.copyOfRange(model, off, off + len), got, "step " + step);
                }
            }
        }
        byte[] all = new byte[size];
        s.read(base, all, 0, size);
        assertArrayEquals(model, all);
        assertEquals(nonZeroBlocks(model, base), s.blocksStored());
        s.flushNodes();
        RadixBlockStore again = RadixBlockStore.open(db.getStore(), s.rootRecid());
        assertEquals(s.blocksStored(), again.blocksStored());
    }

    private static long nonZeroBlocks(byte[] model, long base) {
        long count = 0;
        long first = base / B;
        long last = (base + model.length - 1) / B;
        for (long b = first; b <= last; b++) {
            long from = Math.max(b * B, base) - base;
            long to = Math.min((b + 1) * B, base + model.length) - base;
            for (long i = from; i < to; i++) {
                if (model[(int) i] != 0) {
                    count++;
                    break;
                }
            }
        }
        return count;
    }
}
