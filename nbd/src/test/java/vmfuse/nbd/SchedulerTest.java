package vmfuse.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The scheduler's decisions. Order tests hold the one worker on a gate while requests queue, then
 * read the order they were done in: no clock in them. The limit and the reservation are rates, so
 * those two count what was done in a stretch of real time, with room for a slow machine on the
 * side the property does not forbid.
 */
@Timeout(60)
class SchedulerTest {
    private final List<String> order = Collections.synchronizedList(new ArrayList<>());

    /** Holds the worker until the returned latch is counted down. */
    private static CountDownLatch gate(Scheduler s) {
        CountDownLatch open = new CountDownLatch(1);
        CountDownLatch holding = new CountDownLatch(1);
        s.share("gate").submit(Scheduler.Kind.READ, 0, () -> {
            holding.countDown();
            try {
                open.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        try {
            assertTrue(holding.await(10, TimeUnit.SECONDS), "the worker took the gate");
        } catch (InterruptedException e) {
            throw new AssertionError(e);
        }
        return open;
    }

    private void submit(Scheduler.Share share, Scheduler.Kind kind, int n, CountDownLatch done) {
        for (int i = 0; i < n; i++) {
            share.submit(kind, 4096, () -> {
                order.add(share.name() + ":" + kind.label());
                done.countDown();
            });
        }
    }

    private long count(int first, String prefix) {
        return order.subList(0, first).stream().filter(x -> x.startsWith(prefix)).count();
    }

    @Test
    void weightsSplitTheServiceAmongTheSharesThatAsk() throws Exception {
        try (Scheduler s = new Scheduler(1)) {
            s.set("a", new Scheduler.Qos(3, 0, 0));
            CountDownLatch open = gate(s);
            CountDownLatch done = new CountDownLatch(800);
            submit(s.share("a"), Scheduler.Kind.WRITE, 400, done);
            submit(s.share("b"), Scheduler.Kind.WRITE, 400, done);
            open.countDown();
            assertTrue(done.await(20, TimeUnit.SECONDS));
            long a = count(400, "a:");
            assertTrue(a >= 290 && a <= 310, "3:1 of the first 400 while both asked: " + a + " to a");
        }
    }

    @Test
    void aShareThatAskedNothingGainsNoCreditForIt() throws Exception {
        try (Scheduler s = new Scheduler(1)) {
            CountDownLatch open = gate(s);
            CountDownLatch done = new CountDownLatch(300);
            submit(s.share("b"), Scheduler.Kind.WRITE, 300, done);
            open.countDown();
            assertTrue(done.await(20, TimeUnit.SECONDS), "b alone had all of it");
            order.clear();
            open = gate(s);
            done = new CountDownLatch(200);
            submit(s.share("a"), Scheduler.Kind.WRITE, 100, done);
            submit(s.share("b"), Scheduler.Kind.WRITE, 100, done);
            open.countDown();
            assertTrue(done.await(20, TimeUnit.SECONDS));
            long a = count(100, "a:");
            assertTrue(a >= 45 && a <= 55, "equal weights alternate, whatever b was served before: " + a);
        }
    }

    /**
     * What keeps a flushing tenant's latency near its solo latency beside a streaming one: its
     * request, arriving behind another share's backlog of 1 MiB writes, is the next one done.
     */
    @Test
    void aShareThatAsksRarelyGoesNextPastAnotherSharesBacklog() throws Exception {
        try (Scheduler s = new Scheduler(1)) {
            Scheduler.Share stream = s.share("stream");
            Scheduler.Share flusher = s.share("flusher");
            CountDownLatch done = new CountDownLatch(201);
            CountDownLatch open = gate(s);
            for (int i = 0; i < 200; i++) {
                stream.submit(Scheduler.Kind.WRITE, 1 << 20, () -> { // 1 ms each: the backlog lasts
                    try {
                        Thread.sleep(1);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    order.add("stream");
                    done.countDown();
                });
            }
            open.countDown();
            while (order.size() < 50) { // the stream has been served a while
                Thread.sleep(1);
            }
            int at = order.size();
            flusher.submit(Scheduler.Kind.FLUSH, 0, () -> {
                order.add("flusher");
                done.countDown();
            });
            assertTrue(done.await(20, TimeUnit.SECONDS));
            assertTrue(at < 150, "the stream still had a backlog: " + at);
            int served = order.indexOf("flusher");
            assertTrue(served <= at + 2, "the flush went at " + served + ", submitted when " + at + " were done");
        }
    }

    @Test
    void eachKindOfRequestTakesItsTurnWithinAShare() throws Exception {
        try (Scheduler s = new Scheduler(1)) {
            CountDownLatch open = gate(s);
            CountDownLatch done = new CountDownLatch(52);
            Scheduler.Share a = s.share("a");
            submit(a, Scheduler.Kind.TRIM, 50, done);
            submit(a, Scheduler.Kind.READ, 1, done);
            submit(a, Scheduler.Kind.FLUSH, 1, done);
            open.countDown();
            assertTrue(done.await(20, TimeUnit.SECONDS));
            assertTrue(order.subList(0, 3).containsAll(List.of("a:read", "a:flush")),
                    "a read and a flush are not held behind 50 trims: " + order.subList(0, 3));
        }
    }

    @Test
    void aLimitCapsAShareEvenWhenNothingElseAsks() throws Exception {
        try (Scheduler s = new Scheduler(2)) {
            s.set("capped", new Scheduler.Qos(1, 0, 200));
            Scheduler.Share capped = s.share("capped");
            AtomicInteger done = new AtomicInteger();
            long began = System.nanoTime();
            for (int i = 0; i < 2000; i++) {
                capped.submit(Scheduler.Kind.READ, 4096, done::incrementAndGet);
            }
            Thread.sleep(2000);
            int n = done.get();
            double seconds = (System.nanoTime() - began) / 1e9; // 2 s, or more if this thread woke late
            // 200/s, and at most 50 ms of catching up (10 requests) at the start; a worker held off
            // a while loses turns (a limit is not made up for), so the floor has room for that
            assertTrue(n >= 340 && n <= 200 * seconds + 11, "200 IOPS for " + seconds + " s: " + n);
        }
    }

    @Test
    void aReservationIsHonouredAgainstAFarHeavierWeight() throws Exception {
        try (Scheduler s = new Scheduler(1)) {
            s.set("reserved", new Scheduler.Qos(1, 200, 0));
            s.set("heavy", new Scheduler.Qos(100, 0, 0));
            AtomicInteger reserved = new AtomicInteger();
            AtomicInteger heavy = new AtomicInteger();
            Scheduler.Share r = s.share("reserved");
            Scheduler.Share h = s.share("heavy");
            for (int i = 0; i < 1500; i++) { // each request holds the one worker 1 ms: both always wait
                r.submit(Scheduler.Kind.WRITE, 4096, () -> sleep(reserved));
                h.submit(Scheduler.Kind.WRITE, 4096, () -> sleep(heavy));
            }
            Thread.sleep(2000);
            int got = reserved.get();
            int other = heavy.get();
            assertTrue(got >= 340, "200 IOPS reserved for 2 s (by weight alone it would get 1%): " + got
                    + ", the heavy share " + other);
            assertTrue(other > got, "the rest went by weight: " + other + " against " + got);
        }
    }

    /**
     * Holds the worker 1 ms, spinning: Thread.sleep(1) took 1.1 ms on an idle machine and several
     * on a loaded one, and then less than the 400 requests a second the test counts on were done.
     */
    private static void sleep(AtomicInteger count) {
        long until = System.nanoTime() + 1_000_000;
        while (System.nanoTime() < until) {
            Thread.onSpinWait();
        }
        count.incrementAndGet();
    }

    @Test
    void statsCountWhatEachShareWasServed() throws Exception {
        try (Scheduler s = new Scheduler(2)) {
            Scheduler.Share a = s.share("a");
            CountDownLatch done = new CountDownLatch(10);
            submit(a, Scheduler.Kind.WRITE, 6, done);
            submit(a, Scheduler.Kind.READ, 4, done);
            assertTrue(done.await(10, TimeUnit.SECONDS));
            Scheduler.Stats st = null;
            for (int i = 0; i < 100; i++) { // done() is counted just after the work returns
                st = s.stats().stream().filter(x -> x.share().equals("a")).findFirst().orElseThrow();
                if (st.requests()[Scheduler.Kind.WRITE.ordinal()] == 6 && st.requests()[0] == 4) {
                    break;
                }
                Thread.sleep(10);
            }
            assertEquals(6, st.requests()[Scheduler.Kind.WRITE.ordinal()]);
            assertEquals(4, st.requests()[Scheduler.Kind.READ.ordinal()]);
            assertEquals(6 * 4096, st.bytes()[Scheduler.Kind.WRITE.ordinal()]);
            assertEquals(1, st.users());
            assertTrue(st.p99Micros() >= st.p50Micros() && st.p50Micros() > 0, st.toString());
            // latency by kind: every request in one bucket of its kind's row, their sum at least the work's
            assertEquals(6, java.util.Arrays.stream(st.latency()[Scheduler.Kind.WRITE.ordinal()]).sum());
            assertEquals(4, java.util.Arrays.stream(st.latency()[Scheduler.Kind.READ.ordinal()]).sum());
            assertEquals(0, java.util.Arrays.stream(st.latency()[Scheduler.Kind.FLUSH.ordinal()]).sum());
            assertTrue(st.latencyNanos()[Scheduler.Kind.WRITE.ordinal()] > 0, st.toString());
            a.release();
            assertTrue(s.stats().stream().noneMatch(x -> x.share().equals("a")), "a share nobody uses is forgotten");
        }
    }

    /** Background work waits while guest requests wait, and goes once they are done, or after its bound. */
    @Test
    void backgroundWorkGoesBelowTheGuests() throws Exception {
        try (Scheduler s = new Scheduler(1)) {
            long start = System.nanoTime();
            s.yieldToGuests(5_000_000_000L);
            assertTrue(System.nanoTime() - start < 1_000_000_000L, "nothing waits: it goes at once");

            CountDownLatch open = gate(s);
            CountDownLatch done = new CountDownLatch(20);
            submit(s.share("guest"), Scheduler.Kind.WRITE, 20, done);
            java.util.concurrent.CompletableFuture<Long> bg = java.util.concurrent.CompletableFuture.supplyAsync(() -> {
                try {
                    s.yieldToGuests(20_000_000_000L);
                } catch (InterruptedException e) {
                    throw new IllegalStateException(e);
                }
                return done.getCount();
            });
            Thread.sleep(200);
            assertTrue(!bg.isDone(), "it waits while 20 guest requests wait");
            open.countDown();
            long left = bg.get(10, TimeUnit.SECONDS);
            assertTrue(left <= 1, "it went once the guests' requests were all taken (the last one may be running): "
                    + left);

            open = gate(s);
            CountDownLatch more = new CountDownLatch(5);
            submit(s.share("guest"), Scheduler.Kind.WRITE, 5, more);
            start = System.nanoTime();
            s.yieldToGuests(100_000_000L);
            long waited = System.nanoTime() - start;
            assertTrue(waited >= 90_000_000L && waited < 5_000_000_000L, "it yields at most its bound: " + waited);
            open.countDown();
            assertTrue(more.await(10, TimeUnit.SECONDS));
            assertEquals(3, s.backgroundCounts()[0]);
            assertEquals(2, s.backgroundCounts()[1]);
        }
    }
}
