package vmfuse.journal;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.mapdb.DB;
import org.mapdb.DBMaker;

import vmfuse.durable.Disk;
import vmfuse.durable.RealDisk;

class JournalStoreTest {
    static final int MiB = 1 << 20;

    @TempDir
    Path dir;

    private static byte[] random(int n, long seed) {
        byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    @Test
    void devicesAndTheirContentsSurviveACleanCloseInBothModes() throws Exception {
        Path file = dir.resolve("journals.db");
        byte[] a = random(3 * MiB + 123, 1);
        byte[] b = random(40_000, 2);
        try (JournalStore s = JournalStore.open(file)) {
            s.create("vm1", 128L * MiB, Durability.FLUSH).write(5000, a, 0, a.length);
            JournalDevice d2 = s.create("vm2", 64L * MiB, Durability.CLOSE);
            d2.write(64L * MiB - 10, b, 0, b.length); // past the end: grows
        }
        try (JournalStore s = JournalStore.open(file)) {
            JournalDevice d1 = s.device("vm1");
            assertEquals(128L * MiB, d1.size());
            assertEquals(Durability.FLUSH, d1.durability());
            byte[] back = new byte[a.length];
            assertEquals(a.length, d1.read(5000, back, 0, back.length));
            assertArrayEquals(a, back);
            JournalDevice d2 = s.device("vm2");
            assertEquals(Durability.CLOSE, d2.durability());
            assertEquals(64L * MiB - 10 + b.length, d2.size());
            byte[] back2 = new byte[b.length + 100];
            assertEquals(b.length, d2.read(64L * MiB - 10, back2, 0, back2.length), "a read stops at the end");
            assertArrayEquals(b, java.util.Arrays.copyOf(back2, b.length));
        }
    }

    /** What metrics read: each flush timed in its bucket, each committed checkpoint timed; an idle one is not. */
    /**
     * Punches wait in memory for the checkpoint as ranges, charged to the memory bound: a guest
     * punching every other block of a close-mode device (which asks for no checkpoint on its own)
     * gets checkpoints, and memory stays within the bound. A review found one range of heap per
     * punch, with no bound and no checkpoint.
     */
    /**
     * A write from a direct buffer (what FUSE and the NBD door hand over) at an index of its own,
     * the buffer's position elsewhere: what lands is that range, in memory, in the redo log (a
     * flush-mode device's writes come back from it after a crash, with no checkpoint) and after a
     * checkpoint; the buffer's position is not moved.
     */
    @Test
    void aWriteFromADirectBufferLandsAsFromAnArray() throws Exception {
        Path file = dir.resolve("d.db");
        byte[] a = random(300_000, 5);
        ByteBuffer direct = ByteBuffer.allocateDirect(a.length + 1000);
        direct.put(700, a).position(13);
        vmfuse.durable.FaultyDisk disk = new vmfuse.durable.FaultyDisk(RealDisk.of(null), dir.resolve("graveyard"), 7);
        JournalStore s = JournalStore.open(disk, file, JournalStore.DEFAULT_MEMORY);
        {
            JournalDevice f = s.create("f", 8L * MiB, Durability.FLUSH);
            JournalDevice c = s.create("c", 8L * MiB, Durability.CLOSE);
            f.write(4095, direct, 700, a.length); // starts and ends within blocks
            c.write(4095, direct, 700, a.length);
            assertEquals(13, direct.position());
            assertArrayEquals(a, read(f, 4095, a.length));
            assertArrayEquals(a, read(c, 4095, a.length));
            f.flush();
            s.checkpoint();
            f.write(1L << 20, direct, 700 + 5, 5000); // logged after the checkpoint: replayed below
            f.flush();
            assertArrayEquals(java.util.Arrays.copyOfRange(a, 5, 5005), read(f, 1L << 20, 5000));
            disk.powerCut(); // nothing more reaches the disk: what comes back is what was forced
            try {
                s.close();
            } catch (java.io.IOException e) {
                // its last checkpoint fails: the disk is gone
            }
        }
        try (JournalStore again = JournalStore.open(disk.afterCut(), file, JournalStore.DEFAULT_MEMORY)) {
            assertArrayEquals(a, read(again.device("f"), 4095, a.length));
            assertArrayEquals(java.util.Arrays.copyOfRange(a, 5, 5005), read(again.device("f"), 1L << 20, 5000),
                    "replayed from the redo log");
            assertArrayEquals(a, read(again.device("c"), 4095, a.length), "committed by the checkpoint");
        }
    }

    @Test
    void punchesAreHeldWithinTheMemoryBound() throws Exception {
        long limit = 4L << 20;
        try (JournalStore s = JournalStore.open(RealDisk.of(null), dir.resolve("p.db"), limit)) {
            JournalDevice d = s.create("d", 1L << 30, Durability.CLOSE);
            long checkpoints = s.checkpoints();
            int punches = (int) (4 * (limit / RadixBlockStore.BLOCK_SIZE) * JournalDevice.ZERO_RANGES_PER_BLOCK);
            for (int i = 0; i < punches; i++) {
                d.zero(2L * i * RadixBlockStore.BLOCK_SIZE, RadixBlockStore.BLOCK_SIZE);
                assertTrue(s.memoryHeld() <= limit + RadixBlockStore.BLOCK_SIZE, "held " + s.memoryHeld() + " at " + i);
            }
            assertTrue(s.checkpoints() > checkpoints, "the bound asked for checkpoints");
        }
    }

    /**
     * Every node of a device's index is on the heap, and its guest decides how many there are (one
     * per 2 MiB it writes in): each device reserves, by its size, the most its index could take,
     * and a create, growing truncate or growing write past the store's limit fails with EFBIG,
     * changing nothing. What a device reserves is its own: given back when it shrinks or is
     * deleted, and counted again at the next open. A review found a guest able to grow the heap
     * by a node per block written, outside every bound.
     */
    @Test
    void eachDeviceReservesTheHeapItsIndexCouldTakeAndNoMore() throws Exception {
        long limit = IndexReserve.worstCase(64L * MiB) - IndexReserve.worstCase(0) + IndexReserve.NODE_BYTES;
        Path file = dir.resolve("i.db");
        byte[] block = random(4096, 3);
        try (JournalStore s = JournalStore.open(RealDisk.of(null), file, JournalStore.DEFAULT_MEMORY, limit)) {
            JournalDevice a = s.create("a", 32L * MiB, Durability.FLUSH);
            StoreException tooBig = assertThrows(StoreException.class, () -> s.create("b", 40L * MiB, Durability.FLUSH));
            assertEquals(StoreException.EFBIG, tooBig.errno());
            assertTrue(tooBig.getMessage().contains("would let its guest fill"), tooBig.getMessage());
            assertNull(s.device("b"));
            assertEquals(StoreException.EFBIG, assertThrows(StoreException.class, () -> a.truncate(1L << 30)).errno());
            assertEquals(StoreException.EFBIG,
                    assertThrows(StoreException.class, () -> a.write(1L << 30, block, 0, block.length)).errno());
            // the largest size of all: its reserve computed without overflow (it wrapped to a negative
            // one, which lifted the limit for every device of the store)
            assertTrue(IndexReserve.worstCase(Long.MAX_VALUE) > IndexReserve.worstCase(1L << 62));
            assertEquals(StoreException.EFBIG, assertThrows(StoreException.class, () -> a.truncate(Long.MAX_VALUE)).errno());
            assertEquals(32L * MiB, a.size(), "nothing changed");
            a.write(40L * MiB, block, 0, block.length); // within what is left
            assertEquals(40L * MiB + block.length, a.size());
            a.flush();
            s.delete("a");
            JournalDevice b = s.create("b", 64L * MiB, Durability.CLOSE); // what a reserved is back
            b.truncate(16L * MiB);
            s.create("c", 40L * MiB, Durability.CLOSE); // and what b gave back
        }
        try (JournalStore s = JournalStore.open(RealDisk.of(null), file, JournalStore.DEFAULT_MEMORY, limit)) {
            assertEquals(StoreException.EFBIG,
                    assertThrows(StoreException.class, () -> s.create("d", 16L * MiB, Durability.CLOSE)).errno(),
                    "b and c reserve the rest");
            s.delete("c");
            s.create("d", 16L * MiB, Durability.CLOSE);
        }
        // the default limit, a quarter of the heap, admits a petabyte device on no machine of today
        try (JournalStore s = JournalStore.open(dir.resolve("big.db"))) {
            assertEquals(StoreException.EFBIG,
                    assertThrows(StoreException.class, () -> s.create("huge", 1L << 50, Durability.CLOSE)).errno());
        }
    }

    @Test
    void flushesAndCheckpointsAreTimed() throws Exception {
        try (JournalStore s = JournalStore.open(dir.resolve("j.db"))) {
            JournalDevice d = s.create("vm1", 16L * MiB, Durability.FLUSH);
            for (int i = 0; i < 3; i++) {
                d.write(i * 4096L, random(4096, i), 0, 4096);
                d.flush();
            }
            assertEquals(3, Arrays.stream(d.flushLatency()).sum());
            assertTrue(d.flushNanos() > 0);
            long before = s.checkpoints();
            s.checkpoint();
            assertEquals(before + 1, s.checkpoints());
            long nanos = s.checkpointNanos();
            assertTrue(nanos > 0);
            s.checkpoint(); // nothing changed: no commit, not counted
            assertEquals(before + 1, s.checkpoints());
            assertEquals(nanos, s.checkpointNanos());
        }
    }

    /** A flush with nothing new since the last fdatasync forces nothing; one after a write does. */
    @Test
    void aFlushWithNothingNewForcesNothing() throws Exception {
        try (JournalStore s = JournalStore.open(dir.resolve("j.db"))) {
            JournalDevice a = s.create("a", 16L * MiB, Durability.FLUSH);
            JournalDevice b = s.create("b", 16L * MiB, Durability.FLUSH);
            a.flush(); // what creating them logged, forced: nothing is pending from here
            long syncs = s.syncs();
            long skipped = s.flushesWithNothingToForce();
            a.write(0, random(4096, 1), 0, 4096);
            a.flush(); // the log's forcer, started by the write, or this flush forces it: once
            assertEquals(syncs + 1, s.syncs());
            a.flush(); // the FUA after the preflush, a second fsync: nothing new
            b.flush(); // any device's: the log holds all of them
            assertEquals(syncs + 1, s.syncs(), "nothing appended since: no fdatasync");
            // and the first flush may have found the forcer's force done already
            assertTrue(s.flushesWithNothingToForce() - skipped >= 2, "" + s.flushesWithNothingToForce());
            b.write(0, random(4096, 2), 0, 4096);
            a.flush(); // b's record is in the log: whoever flushes forces it
            assertEquals(syncs + 2, s.syncs());
        }
    }

    /**
     * A write to a flush-mode device is forced as soon as it is logged, before a flush asks (a
     * guest's flush follows its writes after a round trip that the force overlaps): no flush
     * comes here, yet the log is forced; the flush that then comes finds nothing to force.
     */
    @Test
    void aWriteIsForcedBeforeItsFlushAsks() throws Exception {
        try (JournalStore s = JournalStore.open(dir.resolve("j.db"))) {
            JournalDevice a = s.create("a", 16L * MiB, Durability.FLUSH);
            JournalDevice c = s.create("c", 16L * MiB, Durability.CLOSE);
            a.flush();
            long syncs = s.syncs();
            long skipped = s.flushesWithNothingToForce();
            c.write(0, random(4096, 4), 0, 4096);
            Thread.sleep(200);
            assertEquals(syncs, s.syncs(), "a close-mode write is not logged: nothing to force");
            a.write(0, random(4096, 3), 0, 4096);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (s.syncs() == syncs && System.nanoTime() < deadline) {
                Thread.sleep(1);
            }
            assertEquals(syncs + 1, s.syncs(), "forced with no flush asking");
            a.flush();
            assertEquals(syncs + 1, s.syncs());
            assertEquals(skipped + 1, s.flushesWithNothingToForce());
        }
    }

    /**
     * A checkpoint while flush-mode devices flush writes the store in forced steps, so a flush
     * beside it waits behind a step of it at most; one of close-mode devices only writes in one go.
     */
    @Test
    void aCheckpointBesideFlushesWritesInForcedSteps() throws Exception {
        int n = 4 << 20;
        for (Durability mode : Durability.values()) {
            UnforcedBytes disk = new UnforcedBytes();
            Path file = dir.resolve(mode.label()).resolve("j.db");
            Files.createDirectories(file.getParent());
            byte[] data = random(n, 5);
            try (JournalStore s = JournalStore.open(disk, file, 64L * MiB)) {
                JournalDevice d = s.create("d", n, mode);
                s.checkpoint();
                d.write(0, data, 0, n);
                d.flush();
                disk.reset();
                s.checkpoint(); // 4 MiB of blocks: the commit file, then the store
                long most = disk.most(name -> name.startsWith("j.db") && !name.contains(".redo")); // MapDB's files
                if (mode == Durability.FLUSH) {
                    assertTrue(most <= JournalStore.PACED_STEP, "at most a step unforced, saw " + most);
                } else {
                    assertTrue(most > n / 2, "close mode only: MiBs of the commit in one go, saw " + most);
                }
            }
            try (JournalStore s = JournalStore.open(file)) {
                byte[] back = new byte[n];
                s.device("d").read(0, back, 0, n);
                assertArrayEquals(data, back);
            }
        }
    }

    /**
     * A checkpoint asked by a thread whose interrupt flag is set (a timer or a control request
     * shut down at unmount) commits, and the store's files stay open: the close after it commits
     * too, and the flag is the caller's again. (An interrupted thread's FileChannel call closed the
     * channel for good, and close-mode data written since the last commit was lost at close;
     * found by a review.)
     */
    @Test
    void aCheckpointByAnInterruptedThreadCommitsAndTheStoreWorksOn() throws Exception {
        Path file = dir.resolve("j.db");
        try (JournalStore s = JournalStore.open(file)) {
            JournalDevice c = s.create("c", MiB, Durability.CLOSE);
            c.write(0, random(MiB, 21), 0, MiB);
            Thread.currentThread().interrupt();
            try {
                s.checkpoint();
                assertTrue(Thread.currentThread().isInterrupted(), "the interrupt is kept for the caller");
            } finally {
                Thread.interrupted();
            }
            c.write(0, random(MiB, 22), 0, MiB);
        }
        try (JournalStore s = JournalStore.open(file)) {
            byte[] back = new byte[MiB];
            s.device("c").read(0, back, 0, MiB);
            assertArrayEquals(random(MiB, 22), back, "committed at close");
        }
    }

    @Test
    void truncateShrinksAndFreesAndDeleteFreesEverything() throws Exception {
        try (JournalStore s = JournalStore.open(dir.resolve("j.db"))) {
            JournalDevice d = s.create("vm1", 16L * MiB, Durability.CLOSE);
            byte[] data = random(8 * MiB, 3);
            d.write(0, data, 0, data.length);
            assertEquals(8L * MiB, d.bytesStored());
            d.truncate(2L * MiB + 1);
            assertEquals(2L * MiB + 4096, d.bytesStored());
            d.truncate(16L * MiB);
            byte[] back = new byte[4096];
            d.read(2L * MiB + 4096, back, 0, back.length);
            assertArrayEquals(new byte[4096], back, "what a shrink dropped reads as zeros after growing again");
            d.zero(0, 2L * MiB);
            assertEquals(4096, d.bytesStored());
            assertTrue(s.blockMemory().taken() > 0, "blocks wait in memory");
            s.delete("vm1");
            assertNull(s.device("vm1"));
            assertEquals(0, s.blockMemory().taken(), "a deleted device's memory is given back");
            assertEquals(StoreException.class, assertThrows(StoreException.class, () -> s.delete("vm1")).getClass());
            // a handle on it from before: EIO, as a write gets (a read was a NullPointerException)
            assertEquals(StoreException.EIO, assertThrows(StoreException.class, () -> d.read(0, back, 0, 4096)).errno());
            assertEquals(StoreException.EIO, assertThrows(StoreException.class, () -> d.dataRun(0, 8)).errno());
            assertEquals(StoreException.EIO, assertThrows(StoreException.class, () -> d.write(0, back, 0, 4096)).errno());
        }
        try (JournalStore s = JournalStore.open(dir.resolve("j.db"))) {
            assertTrue(s.list().isEmpty());
        }
    }

    @Test
    void namesAreUniqueAndRenameCarriesTheContents() throws Exception {
        try (JournalStore s = JournalStore.open(dir.resolve("j.db"))) {
            JournalDevice d = s.create("a", MiB, Durability.CLOSE);
            d.write(0, new byte[] {1, 2, 3}, 0, 3);
            assertEquals(17, assertThrows(StoreException.class, () -> s.create("a", MiB, Durability.CLOSE)).errno());
            s.rename("a", "b");
            assertNull(s.device("a"));
            byte[] back = new byte[3];
            s.device("b").read(0, back, 0, 3);
            assertArrayEquals(new byte[] {1, 2, 3}, back);
            // without replacing (the undoing of a hide): EEXIST, and both as they were
            s.create("c", MiB, Durability.CLOSE).write(0, new byte[] {9}, 0, 1);
            assertEquals(StoreException.EEXIST, assertThrows(StoreException.class, () -> s.rename("c", "b", false)).errno());
            s.device("b").read(0, back, 0, 3);
            assertArrayEquals(new byte[] {1, 2, 3}, back, "b is not replaced");
            assertNotNull(s.device("c"));
            s.delete("c");
        }
        try (JournalStore s = JournalStore.open(dir.resolve("j.db"))) {
            assertEquals(List.of("b"), s.list().stream().map(JournalDevice::name).toList());
        }
    }

    private static String sha(Path p) throws Exception {
        return java.util.HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(p)));
    }

    @Test
    void aFileThatIsNotAStoreIsRefusedAndLeftAlone() throws Exception {
        Path file = dir.resolve("journals.db");
        Files.write(file, random(64 * 1024, 4));
        String before = sha(file);
        StoreException e = assertThrows(StoreException.class, () -> JournalStore.open(file));
        assertTrue(e.getMessage().startsWith("refusing " + file), e.getMessage());
        assertTrue(e.getMessage().contains("left as it is"), e.getMessage());
        assertEquals(before, sha(file));
    }

    /** Bytes ((i * k) + (i >> 12)) & 0xff for i in [0, n): what the format-2 fixture's devices were written with. */
    private static byte[] pattern(int n, int k) {
        byte[] b = new byte[n];
        for (int i = 0; i < n; i++) {
            b[i] = (byte) (i * k + (i >> 12));
        }
        return b;
    }

    /**
     * A store of format 2, whose blocks are MapDB records: made by vmfuse 46b3eaa (format2-store.tar.gz:
     * its journals.db* after `vmfuse mount`; `journal create --size 8M flushdev`, `--size 4M
     * --durability close closedev`; 4 MiB of pattern(31) at 0 of flushdev, fsync'd; 2 MiB of
     * pattern(7) at 1 MiB of closedev; `vmfuse umount`). Opened here, it reads as written and is
     * format 3 from then on (a vmfuse of format 2 refuses it, instead of taking slots for records);
     * a block written again moves to the blocks file, its record deleted (punched out of
     * journals.db); the records not written again are still read, after a reopen too.
     */
    @Test
    void aStoreOfFormat2ReadsAsItWasAndItsBlocksMoveToTheBlocksFileAsTheyAreWritten() throws Exception {
        Path file = dir.resolve("journals.db");
        Process tar = new ProcessBuilder("tar", "-xzf", Path.of(getClass().getResource("/format2-store.tar.gz").toURI())
                .toString(), "-C", dir.toString()).inheritIO().start();
        assertTrue(tar.waitFor(60, TimeUnit.SECONDS) && tar.exitValue() == 0, "tar");
        byte[] flushed = pattern(4 * MiB, 31);
        byte[] closed = new byte[4 * MiB];
        System.arraycopy(pattern(2 * MiB, 7), 0, closed, MiB, 2 * MiB);
        byte[] again = random(2 * MiB, 21);
        long recordsBefore = allocated(file);
        try (JournalStore s = JournalStore.open(file, JournalStore.DEFAULT_MEMORY, FALLOCATE)) {
            assertArrayEquals(flushed, read(s.device("flushdev"), 0, 4 * MiB));
            assertArrayEquals(closed, read(s.device("closedev"), 0, 4 * MiB));
            assertEquals(8L * MiB, s.device("flushdev").size());
            assertEquals(Durability.CLOSE, s.device("closedev").durability());
            s.device("flushdev").write(0, again, 0, again.length);
            s.checkpoint();
            assertTrue(allocated(BlockFile.blocksFile(file)) >= 2L * MiB, "the blocks written again are in the blocks file");
            assertTrue(recordsBefore - allocated(file) > MiB, "their records left journals.db: " + recordsBefore + " -> "
                    + allocated(file));
        }
        DB db = DBMaker.fileDB(file.toFile()).fileMmapEnableIfSupported().readOnly().make();
        try {
            assertEquals(JournalStore.FORMAT, db.atomicString("vmfuse.format").open().get());
        } finally {
            db.close();
        }
        try (JournalStore s = JournalStore.open(file)) {
            byte[] now = flushed.clone();
            System.arraycopy(again, 0, now, 0, again.length);
            assertArrayEquals(now, read(s.device("flushdev"), 0, 4 * MiB));
            assertArrayEquals(closed, read(s.device("closedev"), 0, 4 * MiB));
        }
    }

    /**
     * The blocks file cut short, or gone (made again empty): the devices' blocks are not there,
     * so the store is refused with the reason, and journals.db is left as it is.
     */
    @Test
    void aBlocksFileCutShortOrGoneIsRefused() throws Exception {
        Path file = dir.resolve("journals.db");
        Path blocks = BlockFile.blocksFile(file);
        try (JournalStore s = JournalStore.open(file)) {
            JournalDevice d = s.create("d", 4 * MiB, Durability.CLOSE);
            d.write(0, random(4 * MiB, 3), 0, 4 * MiB);
        }
        String before = sha(file);
        for (Runnable damage : List.<Runnable>of(() -> truncate(blocks, 2 * MiB), () -> truncate(blocks, 0))) {
            damage.run();
            StoreException e = assertThrows(StoreException.class, () -> JournalStore.open(file));
            assertTrue(e.getMessage().contains("cut short or replaced"), e.getMessage());
            assertEquals(before, sha(file));
        }
        Files.delete(blocks);
        StoreException e = assertThrows(StoreException.class, () -> JournalStore.open(file));
        assertTrue(e.getMessage().contains("cut short or replaced"), e.getMessage());
        assertEquals(before, sha(file));
    }

    private static void truncate(Path p, long size) {
        try (var ch = java.nio.channels.FileChannel.open(p, java.nio.file.StandardOpenOption.WRITE)) {
            ch.truncate(size);
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private static byte[] read(JournalDevice d, long offset, int n) throws StoreException {
        byte[] b = new byte[n];
        assertEquals(n, d.read(offset, b, 0, n));
        return b;
    }

    @Test
    void aStoreOfAnotherFormatVersionIsRefusedAndLeftAlone() throws Exception {
        Path file = dir.resolve("journals.db");
        DB db = DBMaker.fileDB(file.toFile()).fileMmapEnableIfSupported().transactionEnable().make();
        db.atomicString("vmfuse.format").createOrOpen().set("vmfuse-journal-store 99");
        db.commit();
        db.close();
        String before = sha(file);
        StoreException e = assertThrows(StoreException.class, () -> JournalStore.open(file));
        assertTrue(e.getMessage().contains("'vmfuse-journal-store 99'"), e.getMessage());
        assertTrue(e.getMessage().contains("reads '" + JournalStore.FORMAT + "'"), e.getMessage());
        assertEquals(before, sha(file));
    }

    @Test
    void concurrentFlushesShareOneSyncOfTheRedoLog() throws Exception {
        try (JournalStore s = JournalStore.open(dir.resolve("j.db"))) {
            int devices = 8;
            int flushesEach = 40;
            List<JournalDevice> ds = new ArrayList<>();
            for (int i = 0; i < devices; i++) {
                ds.add(s.create("vm" + i, 16L * MiB, Durability.FLUSH));
            }
            long before = s.syncs();
            CountDownLatch start = new CountDownLatch(1);
            List<Thread> threads = new ArrayList<>();
            List<Throwable> errors = java.util.Collections.synchronizedList(new ArrayList<>());
            for (JournalDevice d : ds) {
                Thread t = new Thread(() -> {
                    try {
                        start.await();
                        byte[] block = random(4096, d.name().hashCode());
                        for (int i = 0; i < flushesEach; i++) {
                            d.write((long) i * 4096, block, 0, block.length);
                            d.flush();
                        }
                    } catch (Throwable e) {
                        errors.add(e);
                    }
                });
                t.start();
                threads.add(t);
            }
            start.countDown();
            for (Thread t : threads) {
                t.join(60_000);
            }
            assertTrue(errors.isEmpty(), errors.toString());
            long syncs = s.syncs() - before;
            assertTrue(syncs < devices * flushesEach, syncs + " log syncs for " + devices * flushesEach + " flushes");
        }
    }

    /** Bytes files take on disk (st_blocks), together. */
    private static long allocated(Path... files) throws Exception {
        long n = 0;
        for (Path p : files) {
            Process st = new ProcessBuilder("stat", "-c", "%b", p.toString()).start();
            assertTrue(st.waitFor(30, TimeUnit.SECONDS));
            n += Long.parseLong(new String(st.getInputStream().readAllBytes()).trim()) * 512;
        }
        return n;
    }

    /** fallocate(1) as the hole puncher (the fs module gives one over libc). */
    static final Disk.Punch FALLOCATE = (file, off, len) -> {
        try {
            Process p = new ProcessBuilder("fallocate", "-p", "-o", "" + off, "-l", "" + len, file.toString()).start();
            if (!p.waitFor(30, TimeUnit.SECONDS) || p.exitValue() != 0) {
                throw new java.io.IOException("fallocate -p failed on " + file);
            }
            return true;
        } catch (InterruptedException e) {
            throw new java.io.IOException(e);
        }
    };

    @Test
    void deletingAndPunchingADeviceShrinkTheStoreOnDisk() throws Exception {
        Path file = dir.resolve("j.db");
        byte[] keep = random(4 * MiB, 11);
        try (JournalStore s = JournalStore.open(file, JournalStore.DEFAULT_MEMORY, FALLOCATE)) {
            JournalDevice big = s.create("big", 64L * MiB, Durability.FLUSH);
            JournalDevice small = s.create("small", 16L * MiB, Durability.FLUSH);
            byte[] b = random(MiB, 12);
            for (int i = 0; i < 48; i++) {
                big.write((long) i * MiB, b, 0, b.length);
            }
            small.write(MiB, keep, 0, keep.length);
            s.checkpoint();
            long full = allocated(file, BlockFile.blocksFile(file));
            assertTrue(full > 52L * MiB, "store holds both: " + full);
            big.zero(0, 16L * MiB);
            s.checkpoint();
            long punched = allocated(file, BlockFile.blocksFile(file));
            assertTrue(full - punched > 15L * MiB, "a 16 MiB punch: " + full + " -> " + punched);
            s.delete("big");
            long deleted = allocated(file, BlockFile.blocksFile(file));
            assertTrue(deleted < 6L * MiB, "left after the delete: " + deleted + " (the other device holds 4 MiB)");
        }
        try (JournalStore s = JournalStore.open(file, JournalStore.DEFAULT_MEMORY, FALLOCATE)) {
            byte[] back = new byte[keep.length];
            s.device("small").read(MiB, back, 0, back.length);
            assertArrayEquals(keep, back);
            assertNull(s.device("big"));
        }
    }

    @Test
    void aBurstOfWritesDoesNotLeaveTheRedoLogLarge() throws Exception {
        Path file = dir.resolve("j.db");
        try (JournalStore s = JournalStore.open(file)) {
            JournalDevice d = s.create("vm", 128L * MiB, Durability.FLUSH);
            byte[] b = random(MiB, 9);
            for (int i = 0; i < 100; i++) {
                d.write((long) i * MiB, b, 0, b.length);
            }
            d.flush();
            long big = Math.max(Files.size(RedoLog.segmentFile(JournalStore.redoFile(file), 0)),
                    Files.size(RedoLog.segmentFile(JournalStore.redoFile(file), 1)));
            assertTrue(big > JournalStore.SEGMENT_PREALLOCATE, "a burst logged in one segment: " + big);
            s.checkpoint();
            s.checkpoint();
            for (int i = 0; i < 2; i++) {
                long size = Files.size(RedoLog.segmentFile(JournalStore.redoFile(file), i));
                assertTrue(size <= JournalStore.SEGMENT_PREALLOCATE, "segment " + i + ": " + size);
            }
        }
    }

    /** A store whose devices never flush keeps its redo log a few bytes long; the first flush preallocates it. */
    @Test
    void theRedoLogTakesItsSpaceAtTheFirstFlushedWrite() throws Exception {
        Path file = dir.resolve("lazy.db");
        Path redo = JournalStore.redoFile(file);
        try (JournalStore s = JournalStore.open(file)) {
            JournalDevice c = s.create("c", 64L * MiB, Durability.CLOSE);
            byte[] b = random(MiB, 3);
            c.write(0, b, 0, b.length);
            s.checkpoint();
            long log = Files.size(RedoLog.segmentFile(redo, 0)) + Files.size(RedoLog.segmentFile(redo, 1));
            assertTrue(log < 64 * 1024, "no device flushes: the log takes " + log + " bytes");
            JournalDevice f = s.create("f", 64L * MiB, Durability.FLUSH);
            f.write(0, b, 0, 4096);
            f.flush();
            log = Files.size(RedoLog.segmentFile(redo, 0)) + Files.size(RedoLog.segmentFile(redo, 1));
            assertTrue(log >= MiB, "the active segment is preallocated at its first append: " + log);
        }
        try (JournalStore s = JournalStore.open(file)) {
            byte[] back = new byte[4096];
            s.device("f").read(0, back, 0, back.length);
            assertArrayEquals(Arrays.copyOf(random(MiB, 3), 4096), back);
        }
    }

    /** A child JVM writes and flushes, then is killed with SIGKILL: every flushed byte is there. */
    @Test
    void flushedDataSurviveAKillOfTheProcess() throws Exception {
        Path file = dir.resolve("journals.db");
        ProcessBuilder pb = new ProcessBuilder(ProcessHandle.current().info().command().orElse("java"),
                "-cp", System.getProperty("java.class.path"), CrashChild.class.getName(), file.toString())
                .redirectErrorStream(true);
        Process child = pb.start();
        try (BufferedReader r = new BufferedReader(new InputStreamReader(child.getInputStream()))) {
            String line;
            boolean flushed = false;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (System.nanoTime() < deadline && (line = r.readLine()) != null) {
                if (line.equals("flushed")) {
                    flushed = true;
                    break;
                }
            }
            assertTrue(flushed, "the child did not flush");
        } finally {
            child.destroyForcibly(); // SIGKILL: no close, no commit beyond the flushes
            assertTrue(child.waitFor(30, TimeUnit.SECONDS));
        }
        try (JournalStore s = JournalStore.open(file)) {
            JournalDevice d = s.device("crash");
            byte[] back = new byte[CrashChild.DATA.length];
            d.read(CrashChild.OFFSET, back, 0, back.length);
            assertArrayEquals(CrashChild.DATA, back);
            assertEquals(64L * MiB, d.size());
        }
        try (JournalStore s = JournalStore.open(file)) { // and the replay was checkpointed
            byte[] back = new byte[CrashChild.DATA.length];
            s.device("crash").read(CrashChild.OFFSET, back, 0, back.length);
            assertArrayEquals(CrashChild.DATA, back);
        }
    }

    /** The process {@link #flushedDataSurviveAKillOfTheProcess} kills. */
    public static final class CrashChild {
        static final long OFFSET = 12_345;
        static final byte[] DATA = random(300_000, 99);

        public static void main(String[] args) throws Exception {
            JournalStore s = JournalStore.open(Path.of(args[0]));
            JournalDevice d = s.create("crash", 64L * MiB, Durability.FLUSH);
            d.write(OFFSET, DATA, 0, DATA.length);
            d.flush();
            d.write(OFFSET + DATA.length, random(100_000, 7), 0, 100_000); // written, never flushed
            System.out.println("flushed");
            System.out.flush();
            Thread.sleep(60_000);
        }
    }

    /** A pool of threads as FUSE's: counts the waits its threads announce, and allows them or not. */
    private static final class CountingPool implements vmfuse.durable.Parking.Pool {
        final boolean allow;
        final java.util.concurrent.atomic.AtomicInteger parked = new java.util.concurrent.atomic.AtomicInteger();
        final java.util.concurrent.atomic.AtomicInteger unparked = new java.util.concurrent.atomic.AtomicInteger();

        CountingPool(boolean allow) {
            this.allow = allow;
        }

        @Override
        public boolean parking() {
            parked.incrementAndGet();
            return allow;
        }

        @Override
        public void unparked() {
            unparked.incrementAndGet();
        }
    }

    /**
     * At the memory bound a write waits for a checkpoint, parked: the thread's pool is told (and
     * lends another thread meanwhile), or refuses, and the write fails at once with nothing of it
     * written. Below the bound nothing is announced.
     */
    @Test
    void aWriteAtTheMemoryBoundWaitsParkedOrIsRefusedByItsPool() throws Exception {
        try (JournalStore s = JournalStore.open(RealDisk.of(null), dir.resolve("j.db"), 4L * MiB)) {
            JournalDevice d = s.create("vm", 64L * MiB, Durability.CLOSE);
            CountingPool refusing = new CountingPool(false);
            vmfuse.durable.Parking.serve(refusing);
            try {
                for (int i = 0; i < 4; i++) {
                    d.write((long) i * MiB, random(MiB, i), 0, MiB);
                }
                assertEquals(0, refusing.parked.get(), "no wait below the bound");
                assertEquals(4L * MiB, s.memoryHeld());
                StoreException e = assertThrows(StoreException.class, () -> d.write(4L * MiB, random(MiB, 4), 0, MiB));
                assertEquals(StoreException.EIO, e.errno());
                assertTrue(e.getMessage().contains("too many requests already wait"), e.getMessage());
                assertEquals(1, refusing.parked.get());
                assertEquals(0, refusing.unparked.get());
                byte[] back = new byte[MiB];
                d.read(4L * MiB, back, 0, MiB);
                assertArrayEquals(new byte[MiB], back, "the refused write wrote nothing");

                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (s.memoryHeld() > 0) { // the refused write asked for the checkpoint that frees memory
                    assertTrue(System.nanoTime() < deadline, "memory freed by a checkpoint");
                    Thread.sleep(20);
                }
                for (int i = 0; i < 4; i++) {
                    d.write((long) i * MiB, random(MiB, 10 + i), 0, MiB);
                }
                CountingPool lending = new CountingPool(true);
                vmfuse.durable.Parking.serve(lending);
                d.write(4L * MiB, random(MiB, 14), 0, MiB);
                assertEquals(1, lending.parked.get());
                assertEquals(1, lending.unparked.get());
                for (int i = 0; i < 5; i++) {
                    d.read((long) i * MiB, back, 0, MiB);
                    assertArrayEquals(random(MiB, 10 + i), back);
                }
            } finally {
                vmfuse.durable.Parking.serve(null);
            }
        }
    }

    /**
     * Block memory an interval between checkpoints used stays for the next ones, idle or not
     * (allocating it again costs more than the writes into it): it goes back only once no
     * interval needed it for a minute (BlockMemoryTest, on a clock of its own).
     */
    @Test
    void aBurstKeepsItsMemoryAcrossTheCheckpointsThatFollowIt() throws Exception {
        try (JournalStore s = JournalStore.open(dir.resolve("j.db"))) {
            JournalDevice d = s.create("vm", 64L * MiB, Durability.CLOSE);
            for (int i = 0; i < 32; i++) {
                d.write((long) i * MiB, random(MiB, i), 0, MiB);
            }
            assertEquals(32L * MiB, s.memoryAllocated());
            s.checkpoint();
            assertEquals(32L * MiB, s.memoryAllocated(), "kept for the next interval");
            for (int i = 0; i < 16; i++) {
                d.write((long) i * MiB, random(MiB, 100 + i), 0, MiB);
            }
            assertEquals(32L * MiB, s.memoryAllocated(), "the memory kept is used again, none added");
            s.checkpoint();
            assertEquals(32L * MiB, s.memoryAllocated(), "the interval used 16 MiB, the one before 32, within the minute");
            s.checkpoint();
            assertEquals(32L * MiB, s.memoryAllocated(), "an idle interval gives nothing back within the minute");
            byte[] back = new byte[MiB];
            d.read(31L * MiB, back, 0, MiB);
            assertArrayEquals(random(MiB, 31), back);
            d.read(15L * MiB, back, 0, MiB);
            assertArrayEquals(random(MiB, 115), back);
            d.write(0, random(MiB, 99), 0, MiB); // the memory kept is used again
            d.read(0, back, 0, MiB);
            assertArrayEquals(random(MiB, 99), back);
        }
    }

    /**
     * Journal blocks wait in the JVM's direct memory. A child JVM whose direct memory (24 MiB) is
     * smaller than its journal memory bound (64 MiB) writes 1 MiB at a time, each write across two
     * of the 1 MiB chunks memory is allocated in, to a close-mode device until a write fails: with
     * ENOMEM and nothing of it written (its memory is taken before anything changes), every write
     * before it reads back, the store still checkpoints and closes (the commit's pages fall back
     * to the heap), and what was written is there when the store is opened again.
     */
    @Test
    void whenDirectMemoryRunsOutAWriteFailsWithEnomemAndNothingIsLost() throws Exception {
        Path file = dir.resolve("j.db");
        List<String> lines = childWith24MiBOfDirectMemory(DirectMemoryChild.class, file);
        String all = String.join("\n", lines);
        String failed = lines.stream().filter(l -> l.startsWith("failed ")).findFirst().orElse("");
        assertTrue(failed.matches("failed after \\d+ MiB errno 12 .*no room for another MiB.*"), all);
        int written = Integer.parseInt(failed.split(" ")[2]);
        assertTrue(written >= 4 && written < 24, failed);
        assertTrue(lines.contains("read back " + written + " MiB"), all);
        assertTrue(lines.contains("the failed write changed nothing"), all);
        assertTrue(lines.contains("closed"), all);
        try (JournalStore s = JournalStore.open(file)) {
            JournalDevice d = s.device("vm");
            byte[] back = new byte[MiB];
            for (int i = 0; i < written; i++) {
                d.read(DirectMemoryChild.at(i), back, 0, MiB);
                assertArrayEquals(random(MiB, i), back, "MiB " + i + " after reopening");
            }
        }
    }

    /** The lines {@code main} printed, run in a child JVM with 24 MiB of direct memory on {@code file}. */
    private static List<String> childWith24MiBOfDirectMemory(Class<?> main, Path file) throws Exception {
        ProcessBuilder pb = new ProcessBuilder(ProcessHandle.current().info().command().orElse("java"),
                "-XX:MaxDirectMemorySize=24m", "-cp", System.getProperty("java.class.path"),
                main.getName(), file.toString());
        pb.redirectErrorStream(true);
        Process child = pb.start();
        List<String> lines = new ArrayList<>();
        try (BufferedReader in = new BufferedReader(new InputStreamReader(child.getInputStream()))) {
            for (String line; (line = in.readLine()) != null; ) {
                lines.add(line);
            }
        } finally {
            assertTrue(child.waitFor(60, TimeUnit.SECONDS), "child still running: " + lines);
            child.destroyForcibly();
        }
        return lines;
    }

    /**
     * When direct memory runs out under a flush-mode device written a block at a time (so no slot
     * is left free), the write that finds no memory fails with ENOMEM and so does the next one:
     * the failed reservation gave back no slot that a block still held (it gave back a stale
     * one, which the next write took: two blocks in one slot). A zeroing of part of a stored
     * block then fails too, before anything is logged (its slot went uncounted, and it failed
     * once in the redo log: replayed after a kill, it zeroed what the caller was told had not
     * changed). After a kill, every flushed block reads back, and the zeroed one is whole. Both
     * found while writing this test, after a review.
     */
    @Test
    void whenMemoryRunsOutNoSlotIsSharedAndAFailedZeroingIsNotReplayed() throws Exception {
        Path file = dir.resolve("j.db");
        List<String> lines = childWith24MiBOfDirectMemory(FullMemoryChild.class, file);
        String all = String.join("\n", lines);
        String full = lines.stream().filter(l -> l.startsWith("memory full after ")).findFirst().orElse("");
        assertTrue(full.matches("memory full after \\d+ blocks errno 12"), all);
        assertTrue(lines.contains("the next write failed errno 12"), all);
        assertTrue(lines.contains("every block reads back"), all);
        assertTrue(lines.contains("the zeroing failed errno 12"), all);
        assertTrue(lines.contains("flushed"), all);
        int blocks = Integer.parseInt(full.split(" ")[3]);
        try (JournalStore s = JournalStore.open(file)) {
            JournalDevice d = s.device("vm");
            byte[] back = new byte[4096];
            d.read(FullMemoryChild.STORED, back, 0, back.length);
            assertArrayEquals(random(4096, 7), back, "the block the failed zeroing was for");
            for (int i = 0; i < blocks; i++) {
                d.read(FullMemoryChild.at(i), back, 0, back.length);
                assertArrayEquals(random(4096, i), back, "block " + i + " after the kill");
            }
        }
    }

    /** The process of {@link #whenMemoryRunsOutNoSlotIsSharedAndAFailedZeroingIsNotReplayed}: ends as kill -9 would. */
    public static final class FullMemoryChild {
        static final long STORED = 2 * 4096;

        static long at(int i) {
            return 16L * MiB + (long) i * 4096;
        }

        public static void main(String[] args) throws Exception {
            JournalStore s = JournalStore.open(Path.of(args[0]), 64L * MiB);
            JournalDevice d = s.create("vm", 128L * MiB, Durability.FLUSH);
            d.write(STORED, random(4096, 7), 0, 4096);
            s.checkpoint(); // in the store, no longer in memory
            int i = 0;
            try { // a block at a time: no slot is left free when memory runs out
                for (; i < 30_000; i++) {
                    d.write(at(i), random(4096, i), 0, 4096);
                }
                System.out.println("never failed");
            } catch (StoreException e) {
                System.out.println("memory full after " + i + " blocks errno " + e.errno());
            }
            try {
                d.write(at(i + 1), random(4096, -1), 0, 4096);
                System.out.println("the next write took memory");
            } catch (StoreException e) {
                System.out.println("the next write failed errno " + e.errno());
            }
            byte[] back = new byte[4096];
            boolean whole = true;
            for (int k = 0; k < i; k++) {
                d.read(at(k), back, 0, back.length);
                if (!Arrays.equals(back, random(4096, k))) {
                    System.out.println("block " + k + " differs");
                    whole = false;
                }
            }
            if (whole) {
                System.out.println("every block reads back");
            }
            try {
                d.zero(STORED, 100);
                System.out.println("zeroed");
            } catch (StoreException e) {
                System.out.println("the zeroing failed errno " + e.errno());
            }
            d.flush();
            System.out.println("flushed");
            System.out.flush();
            Runtime.getRuntime().halt(0);
        }
    }

    /** The process of {@link #whenDirectMemoryRunsOutAWriteFailsWithEnomemAndNothingIsLost}. */
    public static final class DirectMemoryChild {
        /** Where write {@code i} goes: half a MiB off, so that it takes the end of one chunk and the start of the next. */
        static long at(int i) {
            return (long) i * MiB + MiB / 2;
        }

        public static void main(String[] args) throws Exception {
            try (JournalStore s = JournalStore.open(Path.of(args[0]), 64L * MiB)) {
                JournalDevice d = s.create("vm", 128L * MiB, Durability.CLOSE);
                d.write(0, random(MiB / 2, 1000), 0, MiB / 2);
                int i = 0;
                try {
                    for (; i < 120; i++) {
                        d.write(at(i), random(MiB, i), 0, MiB);
                    }
                    System.out.println("never failed");
                } catch (StoreException e) {
                    System.out.println("failed after " + i + " MiB errno " + e.errno() + " " + e.getMessage());
                }
                byte[] back = new byte[MiB];
                for (int k = 0; k < i; k++) {
                    d.read(at(k), back, 0, MiB);
                    if (!Arrays.equals(back, random(MiB, k))) {
                        System.out.println("MiB " + k + " differs");
                        return;
                    }
                }
                System.out.println("read back " + i + " MiB");
                d.read(at(i), back, 0, MiB);
                if (Arrays.equals(back, new byte[MiB])) {
                    System.out.println("the failed write changed nothing");
                }
            }
            System.out.println("closed");
        }
    }
}
