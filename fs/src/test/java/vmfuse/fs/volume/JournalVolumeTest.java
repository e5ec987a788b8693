package vmfuse.fs.volume;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static vmfuse.fs.nativeio.Native.*;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

import jnr.ffi.Pointer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import vmfuse.durable.RealDisk;
import vmfuse.fs.FsException;
import vmfuse.fs.nativeio.StructStat;
import vmfuse.fs.space.ReleaseLedger;
import vmfuse.journal.Durability;
import vmfuse.journal.JournalStore;

/** An open journal device of a real journal store: I/O, blocks freed and counted, its stat and extents. */
class JournalVolumeTest {
    private static final int BLOCK = 4096;

    @TempDir
    Path dir;
    private JournalStore store;
    private ReleaseLedger ledger;
    private final AtomicInteger closed = new AtomicInteger();
    private JournalVolume v;

    @BeforeEach
    void open() throws Exception {
        // no limit on the heap the devices' index may reserve: a test takes a device to the largest size
        store = JournalStore.open(RealDisk.of(null), dir.resolve("journals.db"), JournalStore.DEFAULT_MEMORY,
                Long.MAX_VALUE);
        ledger = ReleaseLedger.load(dir.resolve("releases.tsv"));
        v = new JournalVolume(store.create("j1", 0, Durability.FLUSH), ledger, x -> closed.incrementAndGet());
    }

    @AfterEach
    void close() throws Exception {
        store.close();
    }

    @Test
    void writesGrowTheDeviceAndReadBackAfterASync() throws Exception {
        assertEquals(8 * BLOCK, v.write(Bytes.of(Bytes.filled(8 * BLOCK, 4)), 8 * BLOCK, BLOCK));
        assertEquals(9 * BLOCK, v.size());
        v.sync(true);
        assertArrayEquals(new byte[BLOCK], Bytes.read(v, 0, BLOCK));
        assertArrayEquals(Bytes.filled(BLOCK, 4), Bytes.read(v, 8 * BLOCK, BLOCK));
        assertEquals(10, Bytes.read(v, 9 * BLOCK - 10, BLOCK).length);

        Pointer st = StructStat.allocate();
        v.stat(st);
        assertEquals(S_IFREG | 0600, st.getInt(StructStat.MODE));
        assertEquals(new StructStat.Usage(9 * BLOCK, 8 * BLOCK), StructStat.usage(st), "size and the blocks held");
        assertEquals("j1", v.name());
    }

    @Test
    void punchAndZeroFreeBlocksCountedUnderTheDevicesName() throws Exception {
        v.write(Bytes.of(Bytes.filled(16 * BLOCK, 1)), 16 * BLOCK, 0);
        v.punch(4 * BLOCK, 4 * BLOCK);
        v.zero(12 * BLOCK, 2 * BLOCK, true);
        assertArrayEquals(new byte[BLOCK], Bytes.read(v, 5 * BLOCK, BLOCK));
        assertEquals(new ReleaseLedger.Count(6 * BLOCK, 2), ledger.of("journals/j1"));
        assertEquals(16 * BLOCK, v.size());
        assertEquals(List.of(new Extent(0, 4 * BLOCK, true), new Extent(4 * BLOCK, 4 * BLOCK, false),
                new Extent(8 * BLOCK, 4 * BLOCK, true), new Extent(12 * BLOCK, 2 * BLOCK, false),
                new Extent(14 * BLOCK, 2 * BLOCK, true)), v.extents(0, 1L << 40));
    }

    @Test
    void zeroAndAllocateSetTheSizeUnlessToldToKeepIt() throws Exception {
        v.allocate(0, 4 * BLOCK, true);
        assertEquals(0, v.size());
        v.allocate(0, 4 * BLOCK, false);
        assertEquals(4 * BLOCK, v.size());
        v.zero(0, 8 * BLOCK, false);
        assertEquals(8 * BLOCK, v.size());
        assertEquals(List.of(new Extent(0, 8 * BLOCK, false)), v.extents(0, 8 * BLOCK), "nothing held");
        v.truncate(BLOCK);
        assertEquals(BLOCK, v.size());
        assertEquals(2, ledger.of("journals/j1").events(), "the zero and the shrink are counted");
    }

    @Test
    void extentsOfAPartBlockAndOfALargeDeviceAnswerAFirstPart() throws Exception {
        v.truncate(1L << 30);
        v.write(Bytes.of(Bytes.filled(10, 1)), 10, 100 * BLOCK + 5);
        List<Extent> e = v.extents(100 * BLOCK + 7, BLOCK);
        assertEquals(List.of(new Extent(100 * BLOCK + 7, BLOCK - 7, true), new Extent(101 * BLOCK, 7, false)), e);
        List<Extent> big = v.extents(0, 1L << 30);
        Extent last = big.get(big.size() - 1);
        assertTrue(last.end() < 1L << 30, "a GiB is answered in parts: " + last);
        assertEquals(new Extent(0, 100 * BLOCK, false), big.get(0));
    }

    @Test
    void extentsAtTheEndOfTheLargestDeviceDoNotOverflow() throws Exception {
        v.truncate(Long.MAX_VALUE);
        long from = Long.MAX_VALUE - 100 * BLOCK - 5;
        assertEquals(List.of(new Extent(from, Long.MAX_VALUE - from, false)), v.extents(from, Long.MAX_VALUE - from));
        v.write(Bytes.of(Bytes.filled(10, 1)), 10, Long.MAX_VALUE - 10);
        List<Extent> e = v.extents(from, Long.MAX_VALUE - from);
        assertEquals(Long.MAX_VALUE, e.get(e.size() - 1).end());
        assertTrue(e.get(e.size() - 1).data(), e.toString());
    }

    @Test
    void badRangesAndASecondCloseAreRefused() throws Exception {
        assertEquals(EINVAL, assertThrows(FsException.class, () -> v.punch(-BLOCK, BLOCK)).errno());
        assertEquals(EFBIG, assertThrows(FsException.class, () -> v.zero(Long.MAX_VALUE, 2, true)).errno());
        v.close();
        assertEquals(1, closed.get());
        assertEquals(EBADF, assertThrows(FsException.class, v::close).errno());
    }
}
