package vmfuse.reclaimer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import vmfuse.durable.Disk;
import vmfuse.durable.FaultyDisk.Fault;
import vmfuse.durable.FaultyDisk;
import vmfuse.durable.RealDisk;

/**
 * The notice log on a disk that fails and loses power (FAULTS.md R4): a notice acknowledged is
 * never lost, a range a write cut out never comes back, and the log always opens.
 */
class NoticeLogTest {
    static final long MiB = 1 << 20;

    @TempDir
    Path dir;

    private static Notice notice(long seq, long offset) {
        return new Notice(seq, 1, MiB, List.of(new Range(offset, 65536)));
    }

    private Path file() throws IOException {
        return Files.createDirectories(dir.resolve("reclaim")).resolve("vm1.notices");
    }

    private static Set<Long> pendingSeqs(NoticeLog l) {
        Set<Long> s = new HashSet<>();
        l.pending().forEach(p -> s.add(p.seq()));
        return s;
    }

    /**
     * A notice admission emptied (its file was smaller than a block, or rewritten after its fence)
     * is acknowledged and logged with no ranges. Before, that line ("N seq token size ") was
     * refused as corrupt at the next start, and with it the VM's whole log.
     */
    @Test
    void aNoticeAdmittedEmptyLeavesALogThatOpens() throws Exception {
        Path file = file();
        try (NoticeLog l = NoticeLog.open(RealDisk.of(null), file)) {
            l.accepted(notice(1, 0), notice(1, 0).ranges());
            l.accepted(notice(2, MiB), List.of());
        }
        try (NoticeLog again = NoticeLog.open(RealDisk.of(null), file)) {
            assertEquals(Set.of(1L), pendingSeqs(again));
            assertEquals(2, again.lastSeq());
        }
    }

    /**
     * Issue 14: a guest keeps one notice waiting and floods notices its own writes emptied, and
     * others carried out one by one: the log stays within max(1 MiB, 4x what waits), and what
     * waits survives the rewrites.
     */
    @Test
    void aLogWhoseNoticesNeverAllGoStaysWithinItsBound() throws Exception {
        Path file = file();
        try (NoticeLog l = NoticeLog.open(RealDisk.of(null), file)) {
            l.accepted(notice(1, 0), notice(1, 0).ranges()); // waits throughout
            long largest = 0;
            for (long seq = 2; seq < 30_000; seq += 2) { // about 1.5 MiB of lines
                l.accepted(notice(seq, MiB), List.of()); // everything in it written after its fence
                l.accepted(notice(seq + 1, 2 * MiB), notice(seq + 1, 2 * MiB).ranges());
                l.done(seq + 1);
                largest = Math.max(largest, Files.size(file));
            }
            assertTrue(largest <= NoticeLog.COMPACT_AT + 200, "the log reached " + largest + " bytes");
            assertEquals(Set.of(1L), pendingSeqs(l));
        }
        try (NoticeLog again = NoticeLog.open(RealDisk.of(null), file)) {
            assertEquals(Set.of(1L), pendingSeqs(again));
            assertEquals(29_999, again.lastSeq());
        }
    }

    /** The rewrite at the bound is housekeeping: if the disk refuses it, the change that led to it stands. */
    @Test
    void aRewriteAtTheBoundThatFailsLeavesTheChangeStandingAndIsTriedAgain() throws Exception {
        Path file = file();
        FaultyDisk disk = new FaultyDisk(RealDisk.of(null), dir.resolve("graveyard"), 3);
        long seq = 1;
        try (NoticeLog l = NoticeLog.open(disk, file)) {
            l.accepted(notice(seq, 0), notice(seq, 0).ranges()); // waits throughout
            while (Files.size(file) < NoticeLog.COMPACT_AT - 15) { // the next notice's line (30 bytes) passes the bound
                seq++;
                l.accepted(notice(seq, MiB), List.of());
            }
            long before = disk.calls();
            disk.failFrom(before + 3, Fault.ENOSPC); // the append (a write and its force) works, the rewrite fails
            seq++;
            l.accepted(notice(seq, 2 * MiB), notice(seq, 2 * MiB).ranges()); // acknowledged all the same
            assertTrue(disk.failures() > 0, "the rewrite was tried and failed");
            disk.failFrom(Long.MAX_VALUE, Fault.ENOSPC);
            seq++;
            l.accepted(notice(seq, 3 * MiB), notice(seq, 3 * MiB).ranges()); // the rewrite first, then this
            assertTrue(Files.size(file) < 4096, "rewritten: " + Files.size(file));
        }
        try (NoticeLog again = NoticeLog.open(RealDisk.of(null), file)) {
            assertEquals(Set.of(1L, seq - 1, seq), pendingSeqs(again));
            assertEquals(seq, again.lastSeq());
        }
    }

    /** Before the fix the next line was glued to the torn one, and the log was refused at the next start. */
    @Test
    void anAppendTornByAFullDiskLeavesALogThatOpensWithEveryAcknowledgedNotice() throws Exception {
        Path file = file();
        FaultyDisk disk = new FaultyDisk(RealDisk.of(null), dir.resolve("graveyard"), 1);
        try (NoticeLog l = NoticeLog.open(disk, file)) {
            l.accepted(notice(1, 0), notice(1, 0).ranges());
            disk.failAt(disk.calls() + 1, Fault.SHORT_WRITE); // part of the line, then ENOSPC
            l.accepted(notice(2, MiB), notice(2, MiB).ranges()); // the log is rewritten whole: acknowledged
            l.accepted(notice(3, 2 * MiB), notice(3, 2 * MiB).ranges());
            assertEquals(1, disk.failures());
        }
        try (NoticeLog again = NoticeLog.open(RealDisk.of(null), file)) {
            assertEquals(Set.of(1L, 2L, 3L), pendingSeqs(again));
        }
    }

    @Test
    void whileTheDiskRefusesEveryWriteANoticeIsRefusedAndNothingAcknowledgedIsLost() throws Exception {
        Path file = file();
        FaultyDisk disk = new FaultyDisk(RealDisk.of(null), dir.resolve("graveyard"), 2);
        try (NoticeLog l = NoticeLog.open(disk, file)) {
            l.accepted(notice(1, 0), notice(1, 0).ranges());
            disk.failFrom(disk.calls() + 1, Fault.ENOSPC);
            assertThrowsIo(() -> l.accepted(notice(2, MiB), notice(2, MiB).ranges()));
            assertEquals(Set.of(1L), pendingSeqs(l), "not acknowledged, not pending");
            assertEquals(1, l.lastSeq(), "the agent sends it again with the same number");
            disk.failFrom(Long.MAX_VALUE, Fault.ENOSPC); // space again
            l.accepted(notice(2, MiB), notice(2, MiB).ranges());
        }
        try (NoticeLog again = NoticeLog.open(RealDisk.of(null), file)) {
            assertEquals(Set.of(1L, 2L), pendingSeqs(again));
        }
    }

    /** What waits is kept across a restart only after a clean stop at the image's identity now. */
    @Test
    void restoredNoticesAreKeptOnlyAfterACleanStopAtTheSameIdentity() throws Exception {
        Path file = file();
        Disk disk = RealDisk.of(null);
        try (NoticeLog l = NoticeLog.open(disk, file, "id1")) {
            l.accepted(notice(1, 0), notice(1, 0).ranges());
            l.closed("id1");
        }
        try (NoticeLog l = NoticeLog.open(disk, file, "id1")) {
            assertEquals(Set.of(1L), pendingSeqs(l), "a clean stop, the image as it was");
            assertEquals(List.of(), l.dropped());
            l.closed("id1");
        }
        try (NoticeLog l = NoticeLog.open(disk, file, "id2")) {
            assertEquals(Set.of(), pendingSeqs(l), "the image changed since: dropped");
            assertEquals(1, l.dropped().size());
            l.accepted(notice(2, MiB), notice(2, MiB).ranges()); // no clean stop after this one (a crash)
        }
        try (NoticeLog l = NoticeLog.open(disk, file, "id2")) {
            assertEquals(Set.of(), pendingSeqs(l), "no clean stop since it came: dropped");
            assertEquals(2, l.lastSeq(), "its number is not reused");
        }
    }

    private static void assertThrowsIo(ThrowingRunnable r) {
        try {
            r.run();
        } catch (IOException e) {
            return;
        }
        throw new AssertionError("no IOException");
    }

    @FunctionalInterface
    interface ThrowingRunnable {
        void run() throws IOException;
    }

    /**
     * Every disk call of seeded workloads (notices accepted, cut by writes, carried out, and the
     * log reopened) fails in one run and loses power in another; after each, the log opens on
     * what the disk kept, holds every notice acknowledged and not carried out, and none of the
     * ranges a write cut out.
     */
    @Test
    void noFailedCallAndNoPowerCutLosesANoticeOrBringsBackARangeAWriteCut() throws Exception {
        int runs = 0;
        List<String> losses = new ArrayList<>();
        for (long seed = 1; seed <= 4; seed++) {
            long calls = workload(seed, 0, null, losses);
            for (long point = 1; point <= calls; point++) {
                workload(seed, point, Fault.values()[(int) (point % 3)], losses);
                workload(seed, point, null, losses);
                runs += 2;
            }
        }
        System.out.printf("notice log enumeration: %d runs (each a failed call or a power cut), %d losses%n", runs,
                losses.size());
        assertTrue(losses.isEmpty(), losses.size() + " losses; the first: " + losses.subList(0, Math.min(5, losses.size())));
    }

    /**
     * One run: {@code point} 0 is the dry run (returns its calls); else the call fails with
     * {@code fault}, or with null the power goes there.
     */
    private long workload(long seed, long point, Fault fault, List<String> losses) throws IOException {
        Path root = Files.createTempDirectory(dir, "run");
        Path file = Files.createDirectories(root.resolve("reclaim")).resolve("vm.notices");
        FaultyDisk disk = new FaultyDisk(RealDisk.of(null), root.resolve("graveyard"), seed * 7919 + point);
        String label = "seed " + seed + (point == 0 ? "" : fault != null ? " " + fault + " at call " + point
                : " power cut at call " + point);
        if (point > 0 && fault != null) {
            disk.failAt(point, fault);
        } else if (point > 0) {
            disk.powerCutAt(point);
        }
        Random r = new Random(seed);
        Map<Long, Range> acked = new HashMap<>(); // seq -> its range, for notices acknowledged and not done
        Set<Long> maybe = new HashSet<>(); // done, or accepted, where the call failed: either way
        Map<Long, List<Range>> cutOut = new HashMap<>(); // ranges a cut that returned took out, by seq
        NoticeLog l = null;
        long seq = 0;
        try {
            try {
                l = NoticeLog.open(disk, file);
            } catch (IOException e) {
                l = disk.isCut() ? null : NoticeLog.open(disk, file); // a fault in the open: the next one is clean
            }
            for (int i = 0; i < 40 && !disk.isCut(); i++) {
                int p = r.nextInt(10);
                try {
                    if (p < 5) {
                        seq++;
                        Notice n = notice(seq, r.nextInt(64) * 65536L);
                        maybe.add(seq);
                        l.accepted(n, n.ranges());
                        maybe.remove(seq);
                        acked.put(seq, n.ranges().get(0));
                    } else if (p < 7 && !acked.isEmpty()) {
                        Range range = acked.values().stream().skip(r.nextInt(acked.size())).findFirst().orElseThrow();
                        Range w = new Range(range.offset() + 4096 * r.nextInt(8), 4096);
                        l.cut(List.of(w));
                        for (Map.Entry<Long, Range> e : acked.entrySet()) {
                            if (w.offset() >= e.getValue().offset() && w.offset() < e.getValue().end()) {
                                cutOut.computeIfAbsent(e.getKey(), k -> new ArrayList<>()).add(w);
                            }
                        }
                    } else if (p < 9 && !acked.isEmpty()) {
                        long s = acked.keySet().stream().skip(r.nextInt(acked.size())).findFirst().orElseThrow();
                        acked.remove(s);
                        maybe.add(s);
                        l.done(s);
                        maybe.remove(s);
                    } else {
                        l.close();
                        l = null;
                        l = NoticeLog.open(disk, file);
                    }
                } catch (IOException e) {
                    if (l == null && !disk.isCut()) {
                        l = NoticeLog.open(disk, file); // the fault has passed
                    }
                }
            }
        } catch (IOException e) {
            if (!disk.isCut()) {
                losses.add(label + ": " + e);
            }
        }
        long calls = disk.calls();
        if (!disk.isCut()) {
            disk.powerCut();
        }
        if (l != null) {
            l.close();
        }
        FaultyDisk after = disk.afterCut();
        try (NoticeLog back = NoticeLog.open(after, file)) {
            Map<Long, NoticeLog.Pending> found = new HashMap<>();
            back.pending().forEach(pn -> found.put(pn.seq(), pn));
            for (Map.Entry<Long, Range> e : acked.entrySet()) {
                if (!found.containsKey(e.getKey()) && !maybe.contains(e.getKey())
                        && !cutWhole(e.getValue(), cutOut.get(e.getKey()))) {
                    losses.add(label + ": acknowledged notice " + e.getKey() + " is lost");
                }
            }
            for (NoticeLog.Pending pn : found.values()) {
                for (Range w : cutOut.getOrDefault(pn.seq(), List.of())) {
                    if (!pn.ranges().remove(w.offset(), w.end()).isEmpty()) {
                        losses.add(label + ": notice " + pn.seq() + " holds [" + w.offset() + "+" + w.length()
                                + "] again, which a write cut out");
                    }
                }
            }
        } catch (IOException e) {
            losses.add(label + ": the log does not open: " + e.getMessage());
        }
        return calls;
    }

    /** Whether the cuts took out all of a notice's range (it then leaves the log). */
    private static boolean cutWhole(Range range, List<Range> cuts) {
        if (cuts == null) {
            return false;
        }
        ByteRanges left = ByteRanges.of(List.of(range));
        cuts.forEach(w -> left.remove(w.offset(), w.end()));
        return left.bytes() == 0;
    }
}
