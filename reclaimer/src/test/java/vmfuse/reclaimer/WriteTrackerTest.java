package vmfuse.reclaimer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.junit.jupiter.api.Test;

class WriteTrackerTest {
    static final long K = 1024;

    private static void write(WriteTracker t, long off, long len) throws IOException {
        t.beginWrite(off, len);
        t.endWrite();
    }

    private static List<String> str(List<Range> rs) {
        return rs.stream().map(r -> r.offset() + ":" + r.length()).toList();
    }

    @Test
    void writesAfterTheTokenAreCutOutOfANoticeAndWritesBeforeItAreNot() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        write(t, 0, 64 * K); // before the token: the guest's old data, since deleted
        long token = t.token();
        write(t, 16 * K, 4 * K); // after the token: the guest reused this block
        List<Range> safe = t.admit(token, List.of(new Range(0, 64 * K)));
        assertEquals(List.of("0:16384", "20480:45056"), str(safe));
        assertEquals(60 * K, t.pendingBytes());
    }

    @Test
    void aTokenFromAnotherDaemonOrNeverGivenIsStale() throws Exception {
        WriteTracker before = new WriteTracker(WriteTracker.newEpoch() - (1L << 30));
        long old = before.token();
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        assertEquals("stale-fence", assertThrows(ProtocolException.class,
                () -> t.admit(old, List.of(new Range(0, 4096)))).reason());
        long token = t.token();
        assertEquals("stale-fence", assertThrows(ProtocolException.class,
                () -> t.admit(token + 1, List.of(new Range(0, 4096)))).reason());
        assertEquals(0, t.pendingBytes());
    }

    @Test
    void aWriteOnPendingRangesCutsThemAndTellsTheListenerFirst() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        List<String> told = new ArrayList<>();
        t.listener(cut -> told.addAll(str(cut)));
        t.admit(t.token(), List.of(new Range(0, 64 * K)));
        write(t, 60 * K, 8 * K);
        assertEquals(List.of("61440:4096"), told);
        List<Range> punched = t.punch(List.of(new Range(0, 128 * K)), r -> { });
        assertEquals(List.of("0:61440"), str(punched));
        assertEquals(0, t.pendingBytes());
    }

    @Test
    void aListenerThatCannotRecordTheCutFailsTheWriteAndTheRangeStaysGuarded() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        t.admit(t.token(), List.of(new Range(0, 8 * K)));
        t.listener(cut -> {
            throw new IOException("disk full");
        });
        assertThrows(IOException.class, () -> t.beginWrite(0, 4 * K));
        t.endWrite();
        assertEquals(8 * K, t.pendingBytes());
    }

    @Test
    void aPunchHoldsWritesOffUntilItIsDone() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        t.admit(t.token(), List.of(new Range(0, 8 * K)));
        CountDownLatch inPunch = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        AtomicBoolean punchDone = new AtomicBoolean();
        AtomicBoolean wroteDuringPunch = new AtomicBoolean();
        Thread puncher = new Thread(() -> {
            try {
                t.punch(List.of(new Range(0, 8 * K)), r -> {
                    inPunch.countDown();
                    try {
                        release.await(10, TimeUnit.SECONDS);
                    } catch (InterruptedException e) {
                        throw new IOException(e);
                    }
                    punchDone.set(true);
                });
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        puncher.start();
        assertTrue(inPunch.await(10, TimeUnit.SECONDS));
        Thread writer = new Thread(() -> {
            try {
                t.beginWrite(0, 4 * K);
                wroteDuringPunch.set(!punchDone.get());
                t.endWrite();
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        });
        writer.start();
        writer.join(300);
        assertTrue(writer.isAlive(), "the write waits for the punch");
        release.countDown();
        writer.join(10_000);
        puncher.join(10_000);
        assertFalse(wroteDuringPunch.get());
    }

    @Test
    void aPunchThatFailsLeavesTheRangesPending() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        t.admit(t.token(), List.of(new Range(4 * K, 8 * K)));
        assertThrows(IOException.class, () -> t.punch(List.of(new Range(0, 64 * K)), r -> {
            throw new IOException("EIO");
        }));
        assertEquals(8 * K, t.pendingBytes());
        assertEquals(new Range(4 * K, 8 * K), t.punch(List.of(new Range(0, 64 * K)), r -> { }).get(0));
    }

    /**
     * FAULTS.md R2, issue 14: a guest's writes while a token lives used to be logged one entry each
     * (43 MiB of heap per VM at the 1M cap). The written ranges stay within their bound whatever
     * the guest writes, and an admit still never lets through a range written after the token.
     */
    @Test
    void aFloodOfWritesKeepsTheFenceWithinItsBoundAndNeverLetsAWrittenRangeThrough() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch(), new WriteTracker.Limits(64, 1000, 8));
        long before = t.token();
        java.util.Random r = new java.util.Random(5);
        java.util.Set<Long> after = new java.util.HashSet<>();
        long token = 0;
        for (int i = 0; i < 20_000; i++) {
            long block = r.nextInt(1 << 16);
            if (i == 10_000) {
                token = t.token();
            }
            write(t, block * 4 * K, 4 * K);
            if (i >= 10_000) {
                after.add(block);
            }
            assertTrue(t.writtenRanges() <= 64, "written ranges kept: " + t.writtenRanges());
        }
        List<Range> safe = t.admit(token, List.of(new Range(0, (1L << 16) * 4 * K)));
        for (Range x : safe) {
            for (long b = x.offset() / (4 * K); b < (x.end()) / (4 * K); b++) {
                assertTrue(!after.contains(b), "block " + b + " was written after the token and is admitted");
            }
        }
        assertEquals("stale-fence", assertThrows(ProtocolException.class,
                () -> t.admit(before - 1, List.of(new Range(0, 4 * K)))).reason());
    }

    @Test
    void pastItsPendingBoundANoticeIsRefusedAsBusyAndNothingOfItWaits() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch(), new WriteTracker.Limits(64, 10, 8));
        long token = t.token();
        for (int i = 0; i < 10; i++) {
            t.admit(token, List.of(new Range(i * 8 * K, 4 * K))); // ten disjoint ranges
        }
        long waiting = t.pendingBytes();
        ProtocolException e = assertThrows(ProtocolException.class,
                () -> t.admit(token, List.of(new Range(1024 * K, 4 * K))));
        assertEquals("busy", e.reason());
        assertEquals(waiting, t.pendingBytes(), "nothing of the refused notice waits");
    }

    @Test
    void aMillionTokensKeepOnlyTheNewestLive() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch(), new WriteTracker.Limits(64, 1000, 8));
        long first = t.token();
        long last = first;
        for (int i = 0; i < 1_000_000; i++) {
            write(t, (i % 64) * 4 * K, 4 * K);
            last = t.token();
        }
        assertTrue(t.liveTokens() <= 8, "live tokens " + t.liveTokens());
        long oldest = first;
        assertEquals("stale-fence", assertThrows(ProtocolException.class,
                () -> t.admit(oldest, List.of(new Range(0, 4 * K)))).reason());
        t.admit(last, List.of(new Range(1024 * K, 4 * K))); // the newest still works
    }
}
