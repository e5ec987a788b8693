package vmfuse.fs.volume;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static vmfuse.fs.nativeio.Native.*;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

import jnr.ffi.Pointer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import vmfuse.fs.FsException;
import vmfuse.fs.nativeio.LibC;
import vmfuse.fs.nativeio.StructStat;
import vmfuse.fs.space.HolePuncher;
import vmfuse.fs.space.ReleaseLedger;
import vmfuse.reclaimer.Range;
import vmfuse.reclaimer.WriteTracker;

/** An open image on a real file of ext4 (the test machine's /tmp): I/O, space given back and counted, the fence. */
class ImageVolumeTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;
    private ReleaseLedger ledger;
    private Map<String, WriteTracker> trackers;
    private final AtomicInteger closed = new AtomicInteger();
    private ImageVolume v;

    @BeforeEach
    void open() throws Exception {
        ledger = ReleaseLedger.load(dir.resolve("releases.tsv"));
        trackers = new java.util.concurrent.ConcurrentHashMap<>();
        Path file = dir.resolve("vm1.raw");
        Files.write(file, new byte[0]);
        int fd = LibC.INSTANCE.open(file.toString(), O_RDWR | O_CLOEXEC, 0);
        assertTrue(fd >= 0);
        v = new ImageVolume(fd, "vm1.raw", new HolePuncher(ledger), trackers::get, x -> closed.incrementAndGet());
    }

    @AfterEach
    void close() throws Exception {
        if (closed.get() == 0) {
            v.close();
        }
    }

    private long allocated() throws FsException {
        Pointer st = StructStat.allocate();
        v.stat(st);
        return StructStat.usage(st).allocated();
    }

    @Test
    void writesLandWhereTheySayAndAReadStopsAtTheEnd() throws Exception {
        assertEquals(MIB, v.write(Bytes.of(Bytes.filled(MIB, 7)), MIB, 0));
        assertEquals(MIB, v.size());
        assertArrayEquals(Bytes.filled(4096, 7), Bytes.read(v, MIB - 4096, 4096));
        assertEquals(100, Bytes.read(v, MIB - 100, 4096).length, "a read across the end returns what is there");
        assertEquals(0, Bytes.read(v, 2 * MIB, 4096).length);
        v.sync(true);
        v.sync(false);
        v.flush();
    }

    @Test
    void aPunchGivesTheSpaceBackReadsAsZerosAndIsCounted() throws Exception {
        v.write(Bytes.of(Bytes.filled(4 * MIB, 1)), 4 * MIB, 0);
        v.sync(true);
        long before = allocated();
        v.punch(MIB, 2 * MIB);
        assertEquals(before - 2 * MIB, allocated());
        assertArrayEquals(new byte[4096], Bytes.read(v, MIB, 4096));
        assertEquals(4 * MIB, v.size(), "a punch keeps the size");
        assertEquals(new ReleaseLedger.Count(2 * MIB, 1), ledger.of(ReleaseLedger.image("vm1.raw")));

        List<Extent> e = v.extents(0, 4 * MIB);
        assertEquals(List.of(new Extent(0, MIB, true), new Extent(MIB, 2 * MIB, false),
                new Extent(3 * MIB, MIB, true)), e);
    }

    @Test
    void zeroAndAllocateGrowTheImageUnlessToldToKeepItsSize() throws Exception {
        v.zero(0, MIB, true);
        assertEquals(0, v.size());
        v.zero(0, MIB, false);
        assertEquals(MIB, v.size());
        assertArrayEquals(new byte[4096], Bytes.read(v, 0, 4096));
        v.allocate(MIB, MIB, true);
        assertEquals(MIB, v.size());
        v.allocate(MIB, MIB, false);
        assertEquals(2 * MIB, v.size());
    }

    @Test
    void aShrinkIsCountedAndAGrowIsNot() throws Exception {
        v.write(Bytes.of(Bytes.filled(2 * MIB, 3)), 2 * MIB, 0);
        v.truncate(4 * MIB);
        assertEquals(new ReleaseLedger.Count(0, 0), ledger.of(ReleaseLedger.image("vm1.raw")));
        v.truncate(MIB);
        assertEquals(MIB, v.size());
        assertEquals(new ReleaseLedger.Count(MIB, 1), ledger.of(ReleaseLedger.image("vm1.raw")));
    }

    @Test
    void extentsOfAnImageOfHolesAndDataCoverTheRangeInOrder() throws Exception {
        v.truncate(16 * MIB);
        for (int i = 0; i < 16; i += 3) {
            v.write(Bytes.of(Bytes.filled(4096, i + 1)), 4096, (long) i * MIB);
        }
        List<Extent> all = new ArrayList<>();
        long pos = 0;
        while (pos < 16 * MIB) {
            List<Extent> part = v.extents(pos, 16 * MIB - pos);
            assertFalse(part.isEmpty());
            all.addAll(part);
            pos = part.get(part.size() - 1).end();
        }
        long at = 0;
        for (Extent x : all) {
            assertEquals(at, x.offset(), "consecutive");
            at = x.end();
            if (!x.data()) {
                assertArrayEquals(new byte[4096], Bytes.read(v, x.offset(), 4096), "a hole reads as zeros");
            }
        }
        assertEquals(16 * MIB, at);
        for (int i = 0; i < 16; i += 3) {
            long off = (long) i * MIB;
            assertTrue(all.stream().anyMatch(x -> x.data() && x.offset() <= off && off < x.end()), "data at " + off);
        }
        assertEquals(List.of(), v.extents(16 * MIB, MIB), "nothing past the end");
    }

    @Test
    void aWatchedImagesWriteIsCountedByTheFenceBeforeItLands() throws Exception {
        v.write(Bytes.of(Bytes.filled(2 * MIB, 5)), 2 * MIB, 0);
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        trackers.put("vm1.raw", t);
        long token = t.token();
        t.admit(token, List.of(new Range(0, 2 * MIB)));
        assertEquals(2 * MIB, t.pendingBytes());

        v.write(Bytes.of(Bytes.filled(4096, 9)), 4096, MIB);
        assertEquals(2 * MIB - 4096, t.pendingBytes(), "the written block is no longer the reclaimer's to punch");

        t.listener(ranges -> {
            throw new IOException("notice log on a failing disk");
        });
        FsException e = assertThrows(FsException.class, () -> v.write(Bytes.of(Bytes.filled(4096, 8)), 4096, 0));
        assertEquals(EIO, e.errno());
        assertArrayEquals(Bytes.filled(4096, 5), Bytes.read(v, 0, 4096), "a write the fence could not record does not land");
        assertEquals(2 * MIB - 4096, t.pendingBytes(), "and the range stays guarded");
    }

    @Test
    void aRenamedVolumeCountsUnderItsNewNameAndAnUnlinkedOneStaysUsable() throws Exception {
        v.renamed("vm2.raw");
        v.markUnlinked();
        v.write(Bytes.of(Bytes.filled(MIB, 2)), MIB, 0);
        v.punch(0, MIB);
        assertEquals(MIB, ledger.of(ReleaseLedger.image("vm2.raw")).bytes());
        assertTrue(v.unlinked());
    }

    @Test
    void badRangesAreRefusedWithTheirErrno() {
        assertEquals(EINVAL, assertThrows(FsException.class, () -> v.punch(-1, 4096)).errno());
        assertEquals(EFBIG, assertThrows(FsException.class, () -> v.punch(Long.MAX_VALUE - 10, 4096)).errno());
        assertEquals(EINVAL, assertThrows(FsException.class, () -> v.truncate(-1)).errno());
        assertEquals(EINVAL, assertThrows(FsException.class, () -> v.read(Bytes.of(new byte[8]), 8, -8)).errno());
    }

    @Test
    void closeTellsTheOwner() throws Exception {
        v.close();
        assertEquals(1, closed.get(), "the owner's table is told");
        v.close();
        assertEquals(1, closed.get(), "once: a second close does nothing");
    }
}
