package vmfuse.journal;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import vmfuse.durable.Disk;
import vmfuse.durable.FaultyDisk;
import vmfuse.durable.RealDisk;

class RedoLogTest {
    static final long PREALLOC = 64 << 10;

    @TempDir
    Path dir;

    Path base() {
        return dir.resolve("r.redo");
    }

    /** What a recovery from committed generation {@code committed} replays. */
    private List<String> replay(long committed) throws Exception {
        List<String> seen = new ArrayList<>();
        long[] n = new long[1];
        try (RedoLog log = RedoLog.open(RealDisk.of(null), base(), committed, PREALLOC,
                (type, root, a, b, data) -> seen.add(type + ":" + root + ":" + a + ":" + b + ":" + new String(data)), n)) {
            assertEquals(seen.size(), n[0]);
        }
        return seen;
    }

    /** A log whose active segment is of {@code generation}, open for appending. */
    private RedoLog fresh(long generation) throws Exception {
        RedoLog log = RedoLog.open(RealDisk.of(null), base(), generation, PREALLOC, (t, r, a, b, d) -> { }, new long[1]);
        while (log.generation() < generation) {
            log.rotate(log.generation() + 1);
        }
        return log;
    }

    private static void write(RedoLog log, String s) throws Exception {
        log.append(RedoLog.WRITE, 1, 0, 0, s.getBytes(), 0, s.length());
    }

    @Test
    void recordsReplayInOrderAcrossSegmentsFromTheCommittedGeneration() throws Exception {
        try (RedoLog log = fresh(7)) {
            log.append(RedoLog.WRITE, 11, 4096, 0, "abc".getBytes(), 0, 3);
            log.append(RedoLog.ZERO, 11, 0, 512, (byte[]) null, 0, 0);
            log.rotate(8); // a checkpoint began; it did not commit
            log.append(RedoLog.SIZE, 12, 1 << 20, 0, (byte[]) null, 0, 0);
            log.force();
        }
        assertEquals(List.of("1:11:4096:0:abc", "2:11:0:512:", "3:12:1048576:0:"), replay(7));
        // committed 8: segment 7 is held by the store
        assertEquals(List.of("3:12:1048576:0:"), replay(8));
        assertTrue(replay(9).isEmpty());
    }

    /**
     * A rotation forces nothing (it runs with every writer of the store held off): one call, the
     * new header's write. The next force forces the segment it left as well, so a flush after it
     * keeps the records before it whatever a power cut loses (a quarter of the cuts lose every
     * write not forced; a force of the active segment alone lost them).
     */
    @Test
    void aForceAfterARotationKeepsTheRecordsOfTheSegmentItLeft() throws Exception {
        for (long seed = 0; seed < 16; seed++) {
            Path base = Files.createDirectories(dir.resolve("s" + seed)).resolve("r.redo");
            FaultyDisk disk = new FaultyDisk(RealDisk.of(null), dir.resolve("graveyard" + seed), seed);
            RedoLog log = RedoLog.open(disk, base, 1, PREALLOC, (t, r, a, b, d) -> { }, new long[1]);
            write(log, "A");
            long calls = disk.calls();
            log.rotate(2); // a checkpoint began; it did not commit
            assertEquals(calls + 1, disk.calls(), "a rotation writes the new header and forces nothing");
            write(log, "B");
            log.force();
            disk.powerCut();
            List<String> seen = new ArrayList<>();
            RedoLog.open(disk.afterCut(), base, 1, PREALLOC, (type, root, a, b, data) -> seen.add(new String(data)),
                    new long[1]).close();
            assertEquals(List.of("A", "B"), seen, "seed " + seed);
        }
    }

    @Test
    void segmentsAreReusedAndWhatAnOlderUseLeftIsNotReplayed() throws Exception {
        try (RedoLog log = fresh(1)) {
            for (int i = 0; i < 10; i++) {
                write(log, "gen1-record-" + i);
            }
            log.rotate(2);
            write(log, "gen2");
            log.rotate(3); // reuses the file of generation 1, whose ten records are still there
            write(log, "gen3");
            log.force();
        }
        assertEquals(List.of("1:1:0:0:gen2", "1:1:0:0:gen3"), replay(2));
        assertEquals(PREALLOC, Files.size(RedoLog.segmentFile(base(), 0)), "preallocated, never truncated in use");
    }

    /**
     * After a crash during a checkpoint the store opens without rotating, its active segment past
     * the preallocated size: shrinking must not cut it, or the records appended next would sit
     * behind a hole of zeros, where replay stops.
     */
    @Test
    void shrinkingNeverCutsTheActiveSegmentUnderItsRecords() throws Exception {
        byte[] kib = new byte[1024];
        try (RedoLog log = fresh(1)) {
            for (int i = 0; i < 100; i++) {
                log.append(RedoLog.WRITE, 1, i, 0, kib, 0, kib.length);
            }
            log.force();
        }
        try (RedoLog log = RedoLog.open(RealDisk.of(null), base(), 1, PREALLOC, (t, r, a, b, d) -> { }, new long[1])) {
            assertTrue(log.position() > PREALLOC);
            log.shrink();
            write(log, "after");
            log.force();
        }
        List<String> seen = replay(1);
        assertEquals(101, seen.size());
        assertEquals("1:1:0:0:after", seen.get(100));
    }

    @Test
    void replayStopsAtATornOrCorruptRecord() throws Exception {
        long end;
        try (RedoLog log = fresh(1)) {
            write(log, "first");
            write(log, "second");
            log.force();
            end = log.position();
        }
        Path seg = RedoLog.segmentFile(base(), 1);
        byte[] bytes = Files.readAllBytes(seg);
        bytes[(int) end - 2] ^= 0x55; // a bit flip in the last record's data: its checksum fails
        Files.write(seg, bytes);
        assertEquals(List.of("1:1:0:0:first"), replay(1));
        bytes[(int) end - 2] ^= 0x55;
        java.util.Arrays.fill(bytes, (int) end - 3, (int) end, (byte) 0); // torn: its end never written
        Files.write(seg, bytes);
        assertEquals(List.of("1:1:0:0:first"), replay(1));
    }

    /** The salt in segment {@code i}'s header. */
    private long salt(int i) throws Exception {
        return ByteBuffer.wrap(Files.readAllBytes(RedoLog.segmentFile(base(), i)), 16, 8).order(ByteOrder.LITTLE_ENDIAN)
                .getLong();
    }

    /**
     * A flushed record the disk damaged since (a bit flipped in its data; or its header, whose
     * length then cannot be followed) is not taken for a torn tail: a record after it says the log
     * had been forced past it, so replaying to it would drop the flushes after it without a word.
     * The log is refused, and the message's own remedy (cut the segment at the record) opens it
     * with the records before.
     */
    @Test
    void aFlushedRecordTheDiskDamagedRefusesTheLogUntilTheSegmentIsCutThere() throws Exception {
        long[] at = new long[3];
        try (RedoLog log = fresh(1)) {
            for (int i = 0; i < 3; i++) {
                at[i] = log.position();
                write(log, "flushed-" + i);
                log.force();
            }
        }
        Path seg = RedoLog.segmentFile(base(), 1);
        byte[] good = Files.readAllBytes(seg);
        for (int damage : new int[] {(int) at[2] - 2, (int) at[1] + 1}) { // the data of record 1; its magic
            byte[] bytes = good.clone();
            bytes[damage] ^= 0x55;
            Files.write(seg, bytes);
            StoreException e = assertThrows(StoreException.class, () -> replay(1));
            assertTrue(e.getMessage().contains("it is corrupt. Its records end at offset " + at[1]), e.getMessage());
            assertTrue(e.getMessage().contains("the record at offset " + at[2] + " was appended after the log was "
                    + "forced through offset " + at[2]), e.getMessage());
            assertArrayEquals(bytes, Files.readAllBytes(seg), "nothing changed");
            String cut = "truncate -s " + at[1] + " " + seg;
            assertTrue(e.getMessage().endsWith(cut), e.getMessage());
            try (FileChannel ch = FileChannel.open(seg, StandardOpenOption.WRITE)) {
                ch.truncate(at[1]);
            }
            assertEquals(List.of("1:1:0:0:flushed-0"), replay(1));
        }
    }

    /**
     * The same across the two segments a crash in a checkpoint leaves: the newer segment was
     * forced after its rotation, which forced the older one first, so a record of the older one
     * damaged since refuses the log (replaying the newer one over what is left of the older would
     * drop flushes without a word); cut where the message says, it opens.
     */
    @Test
    void aFlushedRecordOfTheOlderOfTwoSegmentsTheDiskDamagedRefusesTheLog() throws Exception {
        long damagedAt;
        try (RedoLog log = fresh(1)) {
            write(log, "old-0");
            damagedAt = log.position();
            write(log, "old-1");
            log.rotate(2); // a checkpoint began; it did not commit
            write(log, "new-0");
            log.force(); // forces segment 1 too
            write(log, "new-1"); // says segment 2 was forced past its header
            log.force();
        }
        Path older = RedoLog.segmentFile(base(), 1);
        byte[] good = Files.readAllBytes(older);
        assertEquals(List.of("1:1:0:0:old-0", "1:1:0:0:old-1", "1:1:0:0:new-0", "1:1:0:0:new-1"), replay(1));
        byte[] bytes = good.clone();
        bytes[(int) damagedAt + 30] ^= 0x55;
        Files.write(older, bytes);
        StoreException e = assertThrows(StoreException.class, () -> replay(1));
        assertTrue(e.getMessage().contains("Its records end at offset " + damagedAt + " with one that is torn"),
                e.getMessage());
        assertTrue(e.getMessage().endsWith("truncate -s " + damagedAt + " " + older), e.getMessage());
        try (FileChannel ch = FileChannel.open(older, StandardOpenOption.WRITE)) {
            ch.truncate(damagedAt);
        }
        assertEquals(List.of("1:1:0:0:old-0", "1:1:0:0:new-0", "1:1:0:0:new-1"), replay(1));
    }

    /**
     * A write longer than MAX_DATA is several records: if one fails, those before it are taken
     * back, so the log holds the whole write or none of it (a review found the first record of a
     * failed 4 MiB write past a device's end growing it at the next replay).
     */
    @Test
    void aLongWriteThatFailsPartWayLeavesNoneOfItInTheLog() throws Exception {
        FaultyDisk disk = new FaultyDisk(RealDisk.of(null), dir.resolve("graveyard"), 3);
        byte[] data = new byte[3 * RedoLog.MAX_DATA];
        Arrays.fill(data, (byte) 'w');
        try (RedoLog log = RedoLog.open(disk, base(), 1, PREALLOC, (t, r, a, b, d) -> { }, new long[1])) {
            write(log, "before");
            long end = log.position();
            long appended = log.appended();
            disk.failWrite(2, FaultyDisk.Fault.ENOSPC); // its second record
            assertThrows(StoreException.class, () -> log.append(RedoLog.WRITE, 1, 0, 0, data, 0, data.length));
            assertEquals(end, log.position());
            assertEquals(appended, log.appended());
            write(log, "after");
            log.force();
        }
        List<String> seen = new ArrayList<>();
        RedoLog.open(RealDisk.of(null), base(), 1, PREALLOC, (type, root, a, b, d) -> seen.add(
                d.length > 100 ? "part of the long write" : new String(d)), new long[1]).close();
        assertEquals(List.of("before", "after"), seen);
    }

    /** As above, with nothing appended after the failed write: the log on disk holds none of it either. */
    @Test
    void aLongWriteThatFailsPartWayIsTakenBackOnTheDiskToo() throws Exception {
        FaultyDisk disk = new FaultyDisk(RealDisk.of(null), dir.resolve("graveyard"), 5);
        byte[] data = new byte[3 * RedoLog.MAX_DATA];
        Arrays.fill(data, (byte) 'w');
        try (RedoLog log = RedoLog.open(disk, base(), 1, PREALLOC, (t, r, a, b, d) -> { }, new long[1])) {
            write(log, "before");
            disk.failWrite(3, FaultyDisk.Fault.EIO); // its third record
            assertThrows(StoreException.class, () -> log.append(RedoLog.WRITE, 1, 0, 0, data, 0, data.length));
            log.force();
        }
        List<String> seen = new ArrayList<>();
        RedoLog.open(RealDisk.of(null), base(), 1, PREALLOC, (type, root, a, b, d) -> seen.add(
                d.length > 100 ? "part of the long write" : new String(d)), new long[1]).close();
        assertEquals(List.of("before"), seen);
    }

    /**
     * As above, and the read that puts the last page back into the tail buffer fails too: the log
     * takes no more appends until it is opened again (the next append would have written the
     * buffer, which then held a later page of the failed write, over the records before it).
     */
    @Test
    void aTailPageThatCannotBeReadBackRefusesAppendsUntilTheLogIsOpenedAgain() throws Exception {
        FaultyDisk disk = new FaultyDisk(RealDisk.of(null), dir.resolve("graveyard"), 4);
        byte[] data = new byte[3 * RedoLog.MAX_DATA];
        Arrays.fill(data, (byte) 'w');
        try (RedoLog log = RedoLog.open(disk, base(), 1, PREALLOC, (t, r, a, b, d) -> { }, new long[1])) {
            write(log, "before");
            log.force();
            disk.failWrite(2, FaultyDisk.Fault.ENOSPC); // its second record
            disk.failRead(disk.reads() + 1); // the tail page's read back
            assertThrows(StoreException.class, () -> log.append(RedoLog.WRITE, 1, 0, 0, data, 0, data.length));
            StoreException e = assertThrows(StoreException.class, () -> write(log, "after"));
            assertTrue(e.getMessage().contains("opened again"), e.getMessage());
        }
        List<String> seen = new ArrayList<>();
        try (RedoLog log = RedoLog.open(RealDisk.of(null), base(), 1, PREALLOC, (type, root, a, b, d) -> seen.add(
                d.length > 100 ? "part of the long write" : new String(d)), new long[1])) {
            write(log, "after");
            log.force();
        }
        assertEquals(List.of("before"), seen, "taken back on the disk all the same");
        seen.clear();
        RedoLog.open(RealDisk.of(null), base(), 1, PREALLOC, (type, root, a, b, d) -> seen.add(
                d.length > 100 ? "part of the long write" : new String(d)), new long[1]).close();
        assertEquals(List.of("before", "after"), seen, "appends go on once it is opened again");
    }

    /**
     * After a power cut, records past a torn one may be intact, written back but never forced:
     * none says the log was forced past the torn one, so that one is the tail. A guest's data in
     * them may hold what looks like such a record: without the segment's salt it is not one (with
     * the salt, which only the host's file holds, it would be, which shows the search reads it).
     */
    @Test
    void recordsPastATornOneThatNoForceCoveredAreATornTailWhateverAGuestWroteInThem() throws Exception {
        long torn;
        long guestAt;
        try (RedoLog log = fresh(1)) {
            write(log, "flushed");
            log.force();
            torn = log.position();
            write(log, "torn by the cut");
            guestAt = log.position() + RedoLog.RECORD_HEADER + RedoLog.PAYLOAD_FIXED;
            byte[] guest = new byte[RedoLog.PAGE];
            log.append(RedoLog.WRITE, 1, 0, 0, guest, 0, guest.length);
            write(log, "intact, never forced"); // it says the log was forced up to the torn one, not past it
        }
        Path seg = RedoLog.segmentFile(base(), 1);
        byte[] bytes = Files.readAllBytes(seg);
        bytes[(int) torn + 20] ^= 0x55;
        byte[] unsalted = record(1, 12345, Long.MAX_VALUE, 1, "forged".getBytes());
        System.arraycopy(unsalted, 0, bytes, (int) guestAt, unsalted.length);
        Files.write(seg, bytes);
        assertEquals(List.of("1:1:0:0:flushed"), replay(1));
        byte[] salted = record(1, salt(1), Long.MAX_VALUE, 1, "forged".getBytes());
        System.arraycopy(salted, 0, bytes, (int) guestAt, salted.length);
        Files.write(seg, bytes);
        assertThrows(StoreException.class, () -> replay(1));
    }

    /**
     * A segment of version 2 (no salt, no forced offset) is replayed; nothing is appended to it:
     * the store's open rotates out of it first, and an append before that is refused.
     */
    @Test
    void aSegmentOfVersion2IsReplayedAndNeverAppendedTo() throws Exception {
        ByteBuffer seg = ByteBuffer.allocate(RedoLog.PAGE).order(ByteOrder.LITTLE_ENDIAN);
        seg.putInt(0x4852_4A56).putInt(2).putLong(5);
        for (String s : List.of("old-0", "old-1")) {
            ByteBuffer p = ByteBuffer.allocate(33 + s.length()).order(ByteOrder.LITTLE_ENDIAN);
            p.putLong(5).put(RedoLog.WRITE).putLong(9).putLong(0).putLong(0).put(s.getBytes()).flip();
            seg.put(framed(p));
        }
        Files.write(RedoLog.segmentFile(base(), 1), seg.array());
        List<String> seen = new ArrayList<>();
        try (RedoLog log = RedoLog.open(RealDisk.of(null), base(), 5, PREALLOC,
                (type, root, a, b, data) -> seen.add(root + ":" + new String(data)), new long[1])) {
            assertEquals(List.of("9:old-0", "9:old-1"), seen);
            assertThrows(IllegalStateException.class, () -> write(log, "not into version 2"));
            log.rotate(6);
            write(log, "new");
            log.force();
        }
        assertEquals(List.of("1:9:0:0:old-0", "1:9:0:0:old-1", "1:1:0:0:new"), replay(5));
    }

    @Test
    void aSegmentWithoutAValidHeaderHoldsNothingAndOneOfAnotherVersionIsRefused() throws Exception {
        try (RedoLog log = fresh(1)) {
            write(log, "kept");
            log.force();
        }
        Files.write(RedoLog.segmentFile(base(), 0), "a header torn by a crash during a rotation".getBytes());
        assertEquals(List.of("1:1:0:0:kept"), replay(1));

        try (FileChannel ch = FileChannel.open(RedoLog.segmentFile(base(), 1), StandardOpenOption.WRITE)) {
            ByteBuffer v = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(99).flip();
            ch.write(v, 4);
        }
        StoreException e = assertThrows(StoreException.class, () -> replay(1));
        assertTrue(e.getMessage().contains("version 99, this vmfuse reads 2 and 3"), e.getMessage());
    }

    /**
     * Appends write whole pages: the tail page's earlier records again, then the record, then
     * zeros. Records of every size across page boundaries, with the log reopened now and then
     * (the tail page is read back from the file): every byte written before an append is still
     * there after it, the rest of the last page is zeros, and replay gives every record.
     */
    @Test
    void appendsRewriteTheTailPageUnchangedAndReplayExactlyAcrossReopens() throws Exception {
        Random rnd = new Random(42);
        int[] sizes = {0, 1, 7, 4000, 4051, 4052, 4053, 4096, 4097, 8192, 65536, 131072, 12345};
        List<String> expected = new ArrayList<>();
        Path seg = RedoLog.segmentFile(base(), 1);
        byte[] garbage = new byte[(int) PREALLOC];
        Arrays.fill(garbage, (byte) 0x5a); // what an older use of the files left
        Files.write(RedoLog.segmentFile(base(), 0), garbage);
        Files.write(seg, garbage);
        RedoLog log = fresh(1);
        try {
            for (int i = 0; i < 200; i++) {
                if (i % 37 == 36) {
                    log.close();
                    log = RedoLog.open(RealDisk.of(null), base(), 1, PREALLOC, (t, r, a, b, d) -> { }, new long[1]);
                }
                int n = i < sizes.length ? sizes[i] : rnd.nextInt(20000);
                byte[] data = new byte[n];
                for (int k = 0; k < n; k++) {
                    data[k] = (byte) ('a' + rnd.nextInt(26));
                }
                long before = log.position();
                byte[] old = Arrays.copyOf(Files.readAllBytes(seg), (int) before);
                log.append(RedoLog.WRITE, 3, i, 0, data, 0, n);
                expected.add("1:3:" + i + ":0:" + new String(data));
                byte[] now = Files.readAllBytes(seg);
                assertArrayEquals(old, Arrays.copyOf(now, (int) before), "append " + i + " changed what was before it");
                long end = log.position();
                long pageEnd = (end + RedoLog.PAGE - 1) & -RedoLog.PAGE;
                for (long k = end; k < pageEnd; k++) {
                    assertEquals(0, now[(int) k], "append " + i + ": byte " + k + " after the record");
                }
            }
            log.force();
        } finally {
            log.close();
        }
        assertEquals(expected, replay(1));
    }

    /** A write longer than MAX_DATA is logged as consecutive records, each of at most MAX_DATA. */
    @Test
    void aLongWriteIsLoggedAsConsecutiveRecords() throws Exception {
        byte[] data = new byte[2 * RedoLog.MAX_DATA + 100];
        new Random(7).nextBytes(data);
        try (RedoLog log = fresh(1)) {
            log.append(RedoLog.WRITE, 5, 1000, 0, data, 0, data.length);
            log.force();
        }
        List<long[]> records = new ArrayList<>();
        byte[] back = new byte[data.length];
        RedoLog.open(RealDisk.of(null), base(), 1, PREALLOC, (type, root, a, b, d) -> {
            records.add(new long[] {a, d.length});
            System.arraycopy(d, 0, back, (int) (a - 1000), d.length);
        }, new long[1]).close();
        assertEquals(3, records.size());
        assertArrayEquals(new long[] {1000, RedoLog.MAX_DATA}, records.get(0));
        assertArrayEquals(new long[] {1000 + RedoLog.MAX_DATA, RedoLog.MAX_DATA}, records.get(1));
        assertArrayEquals(new long[] {1000 + 2L * RedoLog.MAX_DATA, 100}, records.get(2));
        assertArrayEquals(data, back);
    }

    /**
     * A record as the log writes it: magic, payload length, crc32c, payload (generation, salt,
     * forced, type, root, a, b, data).
     */
    private static byte[] record(long generation, long salt, long forced, long root, byte[] data) {
        ByteBuffer p = ByteBuffer.allocate(RedoLog.PAYLOAD_FIXED + data.length).order(ByteOrder.LITTLE_ENDIAN);
        p.putLong(generation).putLong(salt).putLong(forced).put(RedoLog.WRITE).putLong(root).putLong(0).putLong(0)
                .put(data).flip();
        return framed(p);
    }

    /** Magic, payload length, crc32c, then the payload. */
    private static byte[] framed(ByteBuffer p) {
        java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
        crc.update(p.duplicate());
        ByteBuffer r = ByteBuffer.allocate(12 + p.remaining()).order(ByteOrder.LITTLE_ENDIAN);
        r.putInt(0x4C52_4A56).putInt(p.remaining()).putInt((int) crc.getValue()).put(p);
        return r.array();
    }

    /**
     * A guest's data, logged in generation 1, holds at a page boundary a well-formed record of
     * generation 3 for another device. Generation 3 reuses the file, and its records end exactly
     * on that boundary: the page after them must read as the end of the log, not as that record.
     */
    @Test
    void aRecordEndingOnAPageBoundaryIsFollowedByZerosNotByWhatTheFileHeldBefore() throws Exception {
        int dataStart = RedoLog.HEADER_SIZE + RedoLog.RECORD_HEADER + RedoLog.PAYLOAD_FIXED; // the first record's data
        byte[] guest = new byte[3 * RedoLog.PAGE];
        byte[] forged = record(3, 0, 0, 77, "not yours".getBytes()); // without the salt, which a guest cannot know
        System.arraycopy(forged, 0, guest, 2 * RedoLog.PAGE - dataStart, forged.length);
        try (RedoLog log = fresh(1)) {
            log.append(RedoLog.WRITE, 1, 0, 0, guest, 0, guest.length);
            log.force();
            log.rotate(2);
            log.rotate(3); // the file of generation 1 again
            byte[] mine = new byte[2 * RedoLog.PAGE - dataStart]; // ends exactly at the forged record
            log.append(RedoLog.WRITE, 1, 0, 0, mine, 0, mine.length);
            assertEquals(2 * RedoLog.PAGE, log.position());
            log.force();
        }
        List<Long> roots = new ArrayList<>();
        RedoLog.open(RealDisk.of(null), base(), 3, PREALLOC, (type, root, a, b, d) -> roots.add(root), new long[1]).close();
        assertEquals(List.of(1L), roots, "only the record generation 3 appended is replayed");
    }
}
