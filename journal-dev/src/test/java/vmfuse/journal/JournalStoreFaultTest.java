package vmfuse.journal;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32C;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import vmfuse.durable.Disk;
import vmfuse.durable.FaultyDisk.Fault;
import vmfuse.durable.FaultyDisk;
import vmfuse.durable.RealDisk;

/**
 * The findings of the fault review (FAULTS.md J1-J4), each as the failure that showed it: a disk
 * call that fails where it hurts, then a power cut, then the next mount. Each fails on the code
 * before its fix.
 */
class JournalStoreFaultTest {
    static final int BLOCK = 4096;
    static final long MEMORY = 16L << 20;

    @TempDir
    Path dir;

    private Path file() {
        return file(dir);
    }

    /** The store file of a test's store under {@code dir}. */
    static Path file(Path dir) {
        return dir.resolve("store").resolve("journals.db");
    }

    private FaultyDisk disk(long seed) throws IOException {
        return disk(dir, seed);
    }

    /** A disk of 64 MiB free over {@code dir}, faults drawn from {@code seed}, with the store's folder made. */
    static FaultyDisk disk(Path dir, long seed) throws IOException {
        Files.createDirectories(file(dir).getParent());
        FaultyDisk d = new FaultyDisk(RealDisk.of(null), dir.resolve("graveyard"), seed);
        d.setUsableSpace(64L << 20); // redo segments of 4 MiB, room for every checkpoint
        return d;
    }

    private JournalStore open(Disk d) throws StoreException {
        return JournalStore.open(d, file(), MEMORY);
    }

    static byte[] block(char c) {
        byte[] b = new byte[BLOCK];
        Arrays.fill(b, (byte) c);
        return b;
    }

    static byte[] read(JournalDevice d, long blockNo) throws StoreException {
        byte[] b = new byte[BLOCK];
        d.read(blockNo * BLOCK, b, 0, BLOCK);
        return b;
    }

    /**
     * The next checkpoint fails in its commit, before its commit file is complete: if it rotates
     * the redo log (one call: write the new header, not forced), at the commit's first call; if
     * not, at its second.
     */
    private static void failTheNextCommit(FaultyDisk disk, Fault kind) {
        disk.failAt(disk.calls() + 2, kind);
    }

    private static void failTheCommitOfTheNextCheckpoint(JournalStore s, FaultyDisk disk) {
        failTheNextCommit(disk, Fault.EIO);
        assertThrows(StoreException.class, s::checkpoint);
    }

    /** Kills the store as a host crash would: the power goes, nothing more reaches the disk, and it is mounted again. */
    private static FaultyDisk crash(JournalStore s, FaultyDisk disk) throws IOException {
        disk.powerCut();
        try {
            s.close();
        } catch (IOException e) {
            // its last checkpoint fails: the disk is gone
        }
        return disk.afterCut();
    }

    @Test
    void aFailedCommitNeverLetsTheNextCheckpointOverwriteTheLogItNeeds() throws Exception {
        FaultyDisk disk = disk(1);
        JournalStore s = open(disk);
        JournalDevice a = s.create("a", 0, Durability.FLUSH);
        a.write(0, block('A'), 0, BLOCK);
        a.flush(); // 'A' is in the redo log on disk: it must survive anything from here
        long rotated = s.redo().generation();
        failTheCommitOfTheNextCheckpoint(s, disk);
        assertEquals(rotated + 1, s.redo().generation(), "the first failed checkpoint rotated the log");
        a.write(BLOCK, block('B'), 0, BLOCK);
        a.flush();
        failTheCommitOfTheNextCheckpoint(s, disk); // before the fix: rotated over the segment holding 'A'
        assertEquals(rotated + 1, s.redo().generation(), "the second did not: the disk still needs both segments");
        disk = crash(s, disk);
        try (JournalStore again = open(disk)) {
            JournalDevice back = again.device("a");
            assertArrayEquals(block('A'), read(back, 0), "flushed before two failed checkpoints");
            assertArrayEquals(block('B'), read(back, 1), "flushed between them");
        }
    }

    /**
     * A force of the blocks file fails (the checkpoint's first force: a close-mode device starts
     * none of the redo log's): that checkpoint fails, and the next, the fault passed, writes the
     * slots again before it forces and commits. An fsync after a failed one does not make the
     * pages it failed on durable, so without that the commit pointed at blocks a power cut took.
     * Each seed cuts the power its own way (none, all or some of what was not forced survives).
     */
    @Test
    void aBlocksFileForceThatFailedIsWrittenAgainBeforeTheNextCommit() throws Exception {
        for (long seed = 20; seed < 28; seed++) {
            deleteTree(dir.resolve("store"));
            deleteTree(dir.resolve("graveyard"));
            FaultyDisk disk = disk(seed);
            JournalStore s = open(disk);
            JournalDevice c = s.create("c", 0, Durability.CLOSE);
            for (int i = 0; i < 64; i++) {
                c.write((long) i * BLOCK, block((char) ('a' + i % 26)), 0, BLOCK);
            }
            disk.failNextForce(Fault.EIO);
            assertThrows(StoreException.class, s::checkpoint, "seed " + seed);
            s.checkpoint(); // the fault has passed
            disk = crash(s, disk);
            try (JournalStore again = open(disk)) {
                for (int i = 0; i < 64; i++) {
                    assertArrayEquals(block((char) ('a' + i % 26)), read(again.device("c"), i), "seed " + seed + " block " + i);
                }
            }
        }
    }

    /**
     * A bad sector under a stored block: its reads fail with EIO, and so do a partial write, a
     * zeroing and a truncate that would read its old bytes, before anything is logged (a write
     * logged and then failed read as old until a crash, and as new after it: the replay applied
     * it). The other blocks read and write as before; after a crash nothing of the failed changes
     * is there.
     */
    @Test
    void aBadSectorUnderAStoredBlockFailsWhatReadsItAndLogsNothingOfIt() throws Exception {
        FaultyDisk disk = disk(30);
        JournalStore s = open(disk);
        JournalDevice f = s.create("f", 0, Durability.FLUSH);
        f.write(0, block('a'), 0, BLOCK);
        f.write(BLOCK, block('b'), 0, BLOCK);
        s.checkpoint(); // both into the blocks file
        Path blocks = BlockFile.blocksFile(file());
        byte[] all = Files.readAllBytes(blocks);
        long slot = -1;
        for (int at = 0; at + BLOCK <= all.length; at += BLOCK) {
            if (Arrays.equals(block('a'), Arrays.copyOfRange(all, at, at + BLOCK))) {
                slot = at / BLOCK;
            }
        }
        assertTrue(slot >= 0, "block 0 is in the blocks file");
        disk.failReads(blocks, slot * BLOCK + 512, 512);

        StoreException e = assertThrows(StoreException.class, () -> read(f, 0));
        assertEquals(StoreException.EIO, e.errno());
        assertArrayEquals(block('b'), read(f, 1));
        byte[] x = block('x');
        assertEquals(StoreException.EIO, assertThrows(StoreException.class, () -> f.write(100, x, 0, 10)).errno());
        assertEquals(StoreException.EIO, assertThrows(StoreException.class, () -> f.zero(100, 10)).errno());
        assertEquals(StoreException.EIO, assertThrows(StoreException.class, () -> f.truncate(100)).errno());
        assertEquals(2 * BLOCK, f.size());
        f.write(2 * BLOCK, block('c'), 0, BLOCK); // whole blocks need no read
        f.flush();
        assertThrows(StoreException.class, () -> read(f, 0), "still bad: nothing wrote it");

        disk = crash(s, disk);
        try (JournalStore again = open(disk)) {
            JournalDevice g = again.device("f");
            assertEquals(3 * BLOCK, g.size());
            assertArrayEquals(block('a'), read(g, 0), "the failed changes are not in the log");
            assertArrayEquals(block('b'), read(g, 1));
            assertArrayEquals(block('c'), read(g, 2));
        }
    }

    /**
     * Reads of journals.db fail (a bad disk under the index) while a device is deleted: MapDB
     * reads pages in the middle of its changes and does not undo what it changed before a failed
     * read, so the store commits nothing more until it is opened again. Flushes go on into the
     * redo log meanwhile; the next mount has them, and every device as its last commit left it.
     */
    @Test
    void aReadOfTheIndexThatFailsInAChangeStopsCommitsUntilTheStoreIsOpenedAgain() throws Exception {
        FaultyDisk disk = disk(31);
        JournalStore s = open(disk);
        JournalDevice f = s.create("f", 0, Durability.FLUSH);
        JournalDevice g = s.create("g", 0, Durability.FLUSH);
        for (int i = 0; i < 600; i++) { // trees of more than one node each
            f.write((long) i * 512 * BLOCK, block('f'), 0, BLOCK);
            g.write((long) i * 512 * BLOCK, block('g'), 0, BLOCK);
        }
        s.close();
        disk = disk(32); // a new one over the same files: nothing of the index in memory
        s = open(disk);
        disk.failReads(file(), 0, Files.size(file()));
        boolean deleted;
        try {
            s.delete("g");
            deleted = true;
        } catch (StoreException e) {
            deleted = false;
        }
        assertTrue(s.broken(), "the delete's change of MapDB failed part way");
        StoreException e = assertThrows(StoreException.class, s::checkpoint);
        assertTrue(e.getMessage().contains("until it is opened again"), e.getMessage());
        JournalDevice f2 = s.device("f");
        f2.write(7 * BLOCK, block('n'), 0, BLOCK);
        f2.flush();
        assertThrows(IOException.class, s::close, "its last checkpoint fails");

        try (JournalStore again = open(new FaultyDisk(RealDisk.of(null), dir.resolve("graveyard"), 33))) {
            JournalDevice h = again.device("f");
            assertArrayEquals(block('n'), read(h, 7), "flushed while the store took no commits");
            for (int i = 0; i < 600; i += 37) {
                assertArrayEquals(block('f'), read(h, (long) i * 512), "block " + i * 512);
            }
            JournalDevice k = again.device("g");
            if (deleted) {
                assertNull(k, "its delete had returned");
            } else {
                assertNotNull(k, "its delete failed");
                for (int i = 0; i < 600; i += 37) {
                    assertArrayEquals(block('g'), read(k, (long) i * 512), "block " + i * 512);
                }
            }
            again.checkpoint();
        }
    }

    /** A rename over a device that fails on a read of the index: both names are served as before it (until the store is opened again). */
    @Test
    void aRenameThatFailsOnAReadOfTheIndexLeavesBothDevicesAsTheyWere() throws Exception {
        FaultyDisk disk = disk(34);
        JournalStore first = open(disk);
        first.create("f", 0, Durability.FLUSH).write(0, block('f'), 0, BLOCK);
        first.create("g", 0, Durability.FLUSH).write(0, block('g'), 0, BLOCK);
        first.close();
        disk = disk(35); // a new one over the same files: nothing of the index in memory
        JournalStore s = open(disk);
        disk.failReads(file(), 0, Files.size(file()));
        assertThrows(StoreException.class, () -> s.rename("f", "g"));
        assertTrue(s.broken());
        assertArrayEquals(block('f'), read(s.device("f"), 0));
        assertArrayEquals(block('g'), read(s.device("g"), 0), "the device it would have replaced is served again");
        assertThrows(IOException.class, s::close);
        try (JournalStore again = open(RealDisk.of(null))) {
            assertArrayEquals(block('f'), read(again.device("f"), 0));
            assertArrayEquals(block('g'), read(again.device("g"), 0));
        }
    }

    private static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        try (var all = Files.walk(p)) {
            for (Path f : (Iterable<Path>) all.sorted(java.util.Comparator.reverseOrder())::iterator) {
                Files.delete(f);
            }
        }
    }

    @Test
    void aCleanCloseAfterAFailedCommitKeepsCloseModeData() throws Exception {
        FaultyDisk disk = disk(2);
        JournalStore s = open(disk);
        JournalDevice c = s.create("c", 0, Durability.CLOSE);
        c.write(0, block('C'), 0, BLOCK);
        failTheCommitOfTheNextCheckpoint(s, disk);
        s.close(); // nothing written since: before the fix it returned without committing
        try (JournalStore again = open(RealDisk.of(null))) {
            assertArrayEquals(block('C'), read(again.device("c"), 0), "written before a clean unmount");
        }
    }

    @Test
    void aFailedFlushFailsEveryLaterFlushUntilTheStoreIsReopened() throws Exception {
        FaultyDisk disk = disk(3);
        JournalStore s = open(disk);
        JournalDevice a = s.create("a", 0, Durability.FLUSH);
        JournalDevice b = s.create("b", 0, Durability.FLUSH);
        a.write(0, block('0'), 0, BLOCK);
        a.flush(); // the log's segment is there (its preallocation forces it)
        // the log's next fdatasync fails, whoever does it: the store's forcer may start one as soon
        // as a record is appended, before the flush below asks (a call number would race it)
        disk.failNextForce(Fault.EIO);
        a.write(0, block('a'), 0, BLOCK);
        b.write(0, block('b'), 0, BLOCK);
        assertThrows(StoreException.class, a::flush);
        // the kernel reported the writeback error once and marked the pages clean: an fdatasync now
        // returns 0 without 'b' on disk, so a flush that returned would lie
        StoreException e = assertThrows(StoreException.class, b::flush, "a flush after a failed fdatasync");
        assertEquals(StoreException.EIO, e.errno());
        b.write(BLOCK, block('c'), 0, BLOCK);
        assertThrows(StoreException.class, b::flush, "and every flush after it");
        s.checkpoint(); // close-mode work, and the store itself, go on: the checkpoint commits
        disk = crash(s, disk);
        try (JournalStore again = open(disk)) {
            JournalDevice back = again.device("b");
            assertArrayEquals(block('b'), read(back, 0), "the checkpoint after the failure holds it");
            back.write(0, block('n'), 0, BLOCK);
            back.flush(); // reopened and replayed: flushes work again
        }
    }

    @Test
    void aCreateWhoseCommitFailsLeavesNoDevice() throws Exception {
        FaultyDisk disk = disk(4);
        JournalStore s = open(disk);
        failTheNextCommit(disk, Fault.ENOSPC);
        StoreException e = assertThrows(StoreException.class, () -> s.create("x", 1 << 20, Durability.FLUSH));
        assertEquals(StoreException.ENOSPC, e.errno());
        assertNull(s.device("x"), "not served: writes and flushes to it would be lost at the next crash");
        assertEquals(List.of(), s.list());
        JournalDevice x = s.create("x", 1 << 20, Durability.FLUSH); // the name is free: no EEXIST
        x.write(0, block('x'), 0, BLOCK);
        x.flush();
        disk = crash(s, disk);
        try (JournalStore again = open(disk)) {
            assertArrayEquals(block('x'), read(again.device("x"), 0));
        }
    }

    /**
     * A growing truncate whose size record cannot be appended to the redo log fails and leaves the
     * size as it was: a write inside the size it asked for then grows the device itself, logs its
     * size, and after a crash its flushed data is there (the size was set in memory first, the
     * write logged none, and replay gave back the old size, with the data past it).
     */
    @Test
    void aSizeThatCannotBeLoggedIsNotSet() throws Exception {
        FaultyDisk disk = disk(8);
        JournalStore s = open(disk);
        JournalDevice a = s.create("a", 0, Durability.FLUSH);
        a.write(0, block('A'), 0, BLOCK);
        a.flush(); // and the forcer has nothing left to force: the truncate's append is the next call
        disk.failAt(disk.calls() + 1, Fault.ENOSPC);
        assertThrows(StoreException.class, () -> a.truncate(2L * BLOCK));
        assertEquals(BLOCK, a.size(), "a size not in the log is not the device's");
        a.write(BLOCK, block('B'), 0, BLOCK);
        a.flush();
        disk = crash(s, disk);
        try (JournalStore again = open(disk)) {
            JournalDevice back = again.device("a");
            assertEquals(2L * BLOCK, back.size());
            assertArrayEquals(block('B'), read(back, 1), "flushed after the failed truncate");
        }
    }

    /**
     * A write that grows a device and fails at any of its appends to the redo log leaves the
     * device as before it, or as after it: never its bytes past the end, where a growing truncate
     * would show them (its size record was a second append, which could fail alone). As the
     * device is after a crash, too.
     */
    @Test
    void aGrowingWriteThatFailsLeavesNoBytesPastTheEnd() throws Exception {
        FaultyDisk disk = disk(10);
        JournalStore s = open(disk);
        byte[][] past = new byte[3][];
        for (int nth = 1; nth <= 2; nth++) {
            JournalDevice d = s.create("d" + nth, 0, Durability.FLUSH);
            d.write(0, block('A'), 0, BLOCK);
            d.flush();
            disk.failWrite(nth, Fault.ENOSPC); // the nth file write from here: an append of the write's
            boolean wrote;
            try {
                d.write(BLOCK, block('B'), 0, BLOCK);
                wrote = true;
            } catch (StoreException e) {
                wrote = false;
            }
            boolean fired = !disk.cancelWriteFault();
            assertTrue(fired || wrote, "a write that failed had a fault");
            assertEquals(wrote ? 2L * BLOCK : BLOCK, d.size(), "write " + nth);
            d.truncate(3L * BLOCK);
            past[nth] = wrote ? block('B') : new byte[BLOCK];
            assertArrayEquals(past[nth], read(d, 1), "fault at append " + nth + ": past the old end");
            d.flush();
        }
        disk = crash(s, disk);
        try (JournalStore again = open(disk)) {
            for (int nth = 1; nth <= 2; nth++) {
                JournalDevice back = again.device("d" + nth);
                assertEquals(3L * BLOCK, back.size());
                assertArrayEquals(block('A'), read(back, 0));
                assertArrayEquals(past[nth], read(back, 1), "as before the crash");
            }
        }
    }

    /**
     * A crash in a checkpoint, between its rotation and its commit, that tore a record of the
     * newest segment and kept later ones whole (written back before the cut, never flushed): the
     * mount after it replays up to the torn record, and what is written next is never followed,
     * at a later replay, by the records past it, even where it ends right where one of them
     * begins and the zeros written after it were lost (a review found the mount appending there,
     * in the same generation).
     */
    @Test
    void recordsPastATornOneAreNeverReplayedAfterWhatIsWrittenNext() throws Exception {
        FaultyDisk disk = disk(9);
        JournalStore s = open(disk);
        JournalDevice a = s.create("a", 16L * BLOCK, Durability.FLUSH);
        a.write(0, block('0'), 0, BLOCK);
        a.flush(); // and the forcer has nothing left to force: the next calls are the checkpoint's
        failTheCommitOfTheNextCheckpoint(s, disk); // rotated, not committed: as a crash in a checkpoint leaves it
        long gen = s.redo().generation();
        long[] at = new long[9];
        for (int i = 1; i <= 7; i++) { // records R1..R7, all of one size
            at[i] = s.redo().position();
            a.write(i * BLOCK, block((char) ('0' + i)), 0, BLOCK);
        }
        long end = s.redo().position();
        a.flush();
        disk = crash(s, disk);
        Path seg = RedoLog.segmentFile(JournalStore.redoFile(file()), (int) (gen % 2));
        byte[] bytes = Files.readAllBytes(seg);
        bytes[(int) at[5] + 100] ^= 0x55; // R5 torn
        // R6 and R7 as a cut leaves them: appended after the last force that returned, which did not
        // reach past R5's start (here the forcer, which forces as records come, had R5 too; a torn R5
        // is then a damaged one, and the log is refused: RedoLogTest)
        unforced(bytes, at[6], at[5]);
        unforced(bytes, at[7], at[5]);
        Files.write(seg, bytes);
        byte[] past = Arrays.copyOfRange(bytes, (int) at[6], (int) end); // R6 and R7, whole

        s = open(disk);
        a = s.device("a");
        assertArrayEquals(block('4'), read(a, 4), "before the torn record");
        assertArrayEquals(new byte[BLOCK], read(a, 6), "past it: as if never written");
        a.write(8 * BLOCK, block('N'), 0, BLOCK); // R5's size: in the same generation, it ends where R6 begins
        a.flush();
        disk = crash(s, disk);
        try (var f = java.nio.channels.FileChannel.open(seg, java.nio.file.StandardOpenOption.WRITE)) {
            f.write(ByteBuffer.wrap(past), at[6]); // the zeros after it lost, R6 and R7 as they were
        }
        try (JournalStore again = open(disk)) {
            JournalDevice back = again.device("a");
            assertArrayEquals(block('N'), read(back, 8), "flushed");
            assertArrayEquals(new byte[BLOCK], read(back, 6), "R6 was dropped at the last mount: never replayed");
            assertArrayEquals(new byte[BLOCK], read(back, 7), "nor R7");
        }
    }

    /** Makes the record at {@code at} in {@code segment} say the log was forced through {@code forced}, no further. */
    private static void unforced(byte[] segment, long at, long forced) {
        ByteBuffer b = ByteBuffer.wrap(segment).order(ByteOrder.LITTLE_ENDIAN);
        int payload = (int) at + RedoLog.RECORD_HEADER;
        int len = b.getInt((int) at + 4);
        b.putLong(payload + 16, Math.min(b.getLong(payload + 16), forced)); // after generation and salt
        CRC32C crc = new CRC32C();
        crc.update(segment, payload, len);
        b.putInt((int) at + 8, (int) crc.getValue());
    }

    /** chown and chmod of a device: committed when they return; a commit that fails changes nothing. */
    @Test
    void anOwnerIsCommittedOrNotChangedAtAll() throws Exception {
        FaultyDisk disk = disk(7);
        JournalStore s = open(disk);
        JournalDevice d = s.create("d", 1 << 20, Durability.FLUSH);
        assertEquals(JournalDevice.Owner.ROOT, d.owner());
        JournalDevice.Owner qemu = new JournalDevice.Owner(64055, 64055, 0660);
        s.setOwner("d", o -> qemu);
        failTheNextCommit(disk, Fault.EIO);
        assertThrows(StoreException.class, () -> s.setOwner("d", o -> new JournalDevice.Owner(1, 1, 0600)));
        assertEquals(qemu, d.owner(), "the failed chown is undone");
        disk = crash(s, disk);
        try (JournalStore again = open(disk)) {
            assertEquals(qemu, again.device("d").owner(), "the chown that returned survives the power cut");
            assertEquals(StoreException.ENOENT, assertThrows(StoreException.class,
                    () -> again.setOwner("nope", o -> qemu)).errno());
        }
    }

    @Test
    void aDeleteWhoseCommitFailsLeavesTheDeviceWhole() throws Exception {
        FaultyDisk disk = disk(5);
        JournalStore s = open(disk);
        JournalDevice d = s.create("d", 0, Durability.FLUSH);
        d.write(0, block('d'), 0, BLOCK);
        d.flush();
        failTheNextCommit(disk, Fault.EIO);
        assertThrows(StoreException.class, () -> s.delete("d"));
        JournalDevice still = s.device("d");
        assertNotNull(still, "a delete that failed deletes nothing");
        assertArrayEquals(block('d'), read(still, 0));
        still.write(BLOCK, block('e'), 0, BLOCK); // and it is served as before
        still.flush();
        disk = crash(s, disk);
        try (JournalStore again = open(disk)) {
            JournalDevice back = again.device("d");
            assertArrayEquals(block('d'), read(back, 0));
            assertArrayEquals(block('e'), read(back, 1));
        }
    }

    /**
     * A delete or a rename whose commit fails at any of its first disk calls: what the store
     * serves after it is what a crash then opens. (A review found a commit that failed after its
     * commit file was forced, so durable, undone all the same: the device was served again, took
     * flushes, and was gone after the crash with them.)
     */
    @Test
    void aDeleteOrARenameFailedAtAnyCallIsWhatACrashOpens() throws Exception {
        for (int k = 1; k <= 12; k++) {
            for (boolean rename : new boolean[] {false, true}) {
                Path storeDir = file().getParent();
                deleteRecursively(storeDir);
                FaultyDisk disk = disk(100 + k);
                JournalStore s = open(disk);
                JournalDevice d = s.create("d", 0, Durability.FLUSH);
                d.write(0, block('d'), 0, BLOCK);
                d.flush();
                disk.failAt(disk.calls() + k, Fault.EIO);
                String label = (rename ? "rename" : "delete") + " failed at call " + k;
                try {
                    if (rename) {
                        s.rename("d", "r");
                    } else {
                        s.delete("d");
                    }
                } catch (StoreException e) {
                    // failed: undone, or it stands if it reached the disk
                }
                String served = s.device("d") != null ? "d" : rename && s.device("r") != null ? "r" : null;
                if (served != null) {
                    JournalDevice still = s.device(served);
                    assertArrayEquals(block('d'), read(still, 0), label);
                    still.write(BLOCK, block('e'), 0, BLOCK);
                    still.flush(); // acknowledged: a crash keeps it
                }
                disk = crash(s, disk);
                try (JournalStore again = open(disk)) {
                    String opened = again.device("d") != null ? "d" : again.device("r") != null ? "r" : null;
                    assertEquals(served, opened, label + ": served under one name, opened under another");
                    if (opened != null) {
                        assertArrayEquals(block('d'), read(again.device(opened), 0), label);
                        assertArrayEquals(block('e'), read(again.device(opened), 1), label + ": a flush after it");
                    }
                }
            }
        }
    }

    /**
     * A store file cut short, or emptied, from outside (a copy that stopped, a restore of the
     * wrong file) is refused with its reason, and nothing is written over what is left: a review
     * found an empty one opened as a new store (replaying the log into nothing, then rotating over
     * it) and a short one served with zeros.
     */
    @Test
    void aStoreFileCutShortOrEmptiedIsRefusedAndLeftAsItIs() throws Exception {
        JournalStore s = open(disk(7));
        JournalDevice d = s.create("d", 0, Durability.FLUSH);
        for (int i = 0; i < 64; i++) {
            d.write((long) i * BLOCK, block('d'), 0, BLOCK);
        }
        s.checkpoint();
        d.write(0, block('e'), 0, BLOCK);
        d.flush();
        s.close();
        for (long cutTo : new long[] {Files.size(file()) - 4096, 0}) {
            try (var ch = java.nio.channels.FileChannel.open(file(), java.nio.file.StandardOpenOption.WRITE)) {
                ch.truncate(cutTo);
            }
            Map<String, byte[]> before = contents(file().getParent());
            StoreException e = assertThrows(StoreException.class, () -> open(disk(8)).close());
            assertTrue(e.getMessage().contains(cutTo == 0 ? "the store file was lost" : "it was cut short"),
                    e.getMessage());
            Map<String, byte[]> after = contents(file().getParent());
            assertEquals(before.keySet(), after.keySet(), "no file made or removed");
            for (String f : before.keySet()) {
                assertArrayEquals(before.get(f), after.get(f), f + " is as it was");
            }
        }
    }

    private static Map<String, byte[]> contents(Path dir) throws IOException {
        Map<String, byte[]> m = new java.util.TreeMap<>();
        try (var list = Files.list(dir)) {
            for (Path p : list.toList()) {
                m.put(p.getFileName().toString(), Files.readAllBytes(p));
            }
        }
        return m;
    }

    private static void deleteRecursively(Path p) throws IOException {
        if (Files.exists(p)) {
            try (var walk = Files.walk(p)) {
                for (Path q : walk.sorted(java.util.Comparator.reverseOrder()).toList()) {
                    Files.delete(q);
                }
            }
        }
    }

    @Test
    void aRenameWhoseCommitFailsLeavesBothNamesAsTheyWere() throws Exception {
        FaultyDisk disk = disk(6);
        JournalStore s = open(disk);
        JournalDevice from = s.create("from", 0, Durability.FLUSH);
        JournalDevice to = s.create("to", 0, Durability.CLOSE);
        from.write(0, block('f'), 0, BLOCK);
        from.flush();
        to.write(0, block('t'), 0, BLOCK);
        failTheNextCommit(disk, Fault.EIO);
        assertThrows(StoreException.class, () -> s.rename("from", "to"));
        assertEquals("from", s.device("from").name());
        assertArrayEquals(block('f'), read(s.device("from"), 0));
        assertArrayEquals(block('t'), read(s.device("to"), 0), "the device it would have replaced is still there");
        s.rename("from", "to"); // and the rename, done again, replaces it whole
        assertNull(s.device("from"));
        assertArrayEquals(block('f'), read(s.device("to"), 0));
        disk = crash(s, disk);
        try (JournalStore again = open(disk)) {
            assertNull(again.device("from"));
            assertArrayEquals(block('f'), read(again.device("to"), 0));
            assertTrue(again.list().size() == 1, "one device: " + again.list());
        }
    }
}
