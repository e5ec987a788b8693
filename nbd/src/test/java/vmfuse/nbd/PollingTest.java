package vmfuse.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;

class PollingTest {
    private static final long WINDOW = 2_000_000; // 2 ms: long enough to be told from a thread's hiccup

    /** A client whose next request comes {@code afterNanos} into the wait (never, for Long.MAX_VALUE). */
    private static Polling.Ready comesAfter(long afterNanos) {
        long at = System.nanoTime() + afterNanos;
        return () -> System.nanoTime() - at >= 0;
    }

    @Test
    void aRequestWithinTheWindowIsCaughtWithoutSleeping() throws Exception {
        Polling.Window w = new Polling(WINDOW, 1).window();
        AtomicInteger sleeps = new AtomicInteger();
        w.await(comesAfter(100_000), sleeps::incrementAndGet, true);
        assertEquals(0, sleeps.get());
        assertEquals(WINDOW, w.nanos());
    }

    @Test
    void theWindowShrinksForAClientThatIsSlowAndIsWholeAgainWhenItIsQuick() throws Exception {
        Polling.Window w = new Polling(WINDOW, 1).window();
        AtomicInteger sleeps = new AtomicInteger();
        // a client slower than the window: each wait polls in vain and sleeps, and the window halves
        Polling.Sleep slow = () -> {
            sleeps.incrementAndGet();
            sleep(WINDOW);
        };
        w.await(comesAfter(Long.MAX_VALUE), slow, true);
        assertEquals(WINDOW / 2, w.nanos());
        w.await(comesAfter(Long.MAX_VALUE), slow, true);
        assertEquals(WINDOW / 4, w.nanos());
        while (w.nanos() > 0) {
            w.await(comesAfter(Long.MAX_VALUE), slow, true);
        }
        int vain = sleeps.get();
        assertTrue(vain >= 3 && vain <= 10, vain + " polls in vain before none");
        // no window: the next wait sleeps at once, without a poll, and one that slept less than the
        // window makes it whole
        AtomicInteger polls = new AtomicInteger();
        int slept = sleeps.get();
        wakeQuickly(w, () -> polls.incrementAndGet() < 0, sleeps::incrementAndGet);
        assertEquals(0, polls.get(), "slept at once, without polling");
        assertTrue(sleeps.get() > slept);
        // polls in vain down to the smallest window, then a request at once: a whole window would
        // have caught it (from the smallest, the wait takes far less than the window, so a loaded
        // machine's pause in the poll does not make it look slow: from half, a 1 ms pause did)
        w.await(comesAfter(Long.MAX_VALUE), slow, true);
        assertEquals(WINDOW / 2, w.nanos());
        while (w.nanos() >= 2 * Polling.MIN_NANOS) {
            w.await(comesAfter(Long.MAX_VALUE), slow, true);
        }
        assertTrue(w.nanos() > 0, "still a window");
        long smallest = w.nanos();
        wakeQuickly(w, comesAfter(Long.MAX_VALUE), () -> {});
        assertTrue(smallest < WINDOW / 8, smallest + " ns is not the smallest window");
        // a wait within a request (the rest of a payload) polls the whole window and learns nothing
        w.await(comesAfter(Long.MAX_VALUE), sleeps::incrementAndGet, false);
        assertEquals(WINDOW, w.nanos());
    }

    @Test
    void afterARequestThatTookLongerThanTheWindowTheNextIsNotPolledFor() throws Exception {
        Polling.Window w = new Polling(WINDOW, 1).window();
        AtomicInteger polls = new AtomicInteger();
        AtomicInteger sleeps = new AtomicInteger();
        w.done(WINDOW + 1); // a read from the disk, say
        w.await(() -> polls.incrementAndGet() < 0, sleeps::incrementAndGet, true);
        assertEquals(0, polls.get(), "slept at once, without polling");
        assertEquals(1, sleeps.get());
        assertEquals(WINDOW, w.nanos(), "nothing learnt of the client's pace");
        // the rest of a request the client is sending now is still polled for
        w.await(() -> polls.incrementAndGet() > 0, sleeps::incrementAndGet, false);
        assertEquals(1, polls.get());
        assertEquals(1, sleeps.get());
        // after a quick one (up to the whole window), the next is polled for again
        w.done(WINDOW);
        w.await(() -> polls.incrementAndGet() > 0, sleeps::incrementAndGet, true);
        assertEquals(2, polls.get());
        assertEquals(1, sleeps.get());
    }

    @Test
    void aWaitThatSleptLongerThanTheWindowLeavesNoWindow() throws Exception {
        Polling.Window w = new Polling(WINDOW, 1).window();
        while (w.nanos() > 0) {
            w.await(comesAfter(Long.MAX_VALUE), () -> sleep(WINDOW), true);
        }
        w.await(() -> false, () -> sleep(3 * WINDOW), true);
        assertEquals(0, w.nanos(), "a client slower than the window is not polled for");
    }

    @Test
    void noMoreThanMaxPollersPollAtOnce() throws Exception {
        Polling polling = new Polling(WINDOW * 500, 1); // 1 s
        Polling.Window first = polling.window();
        Polling.Window second = polling.window();
        AtomicBoolean release = new AtomicBoolean();
        CountDownLatch polling1 = new CountDownLatch(1);
        Thread t = new Thread(() -> {
            try {
                first.await(() -> {
                    polling1.countDown();
                    return release.get();
                }, () -> {}, true);
            } catch (java.io.IOException e) {
                throw new AssertionError(e);
            }
        });
        t.start();
        assertTrue(polling1.await(10, TimeUnit.SECONDS));
        AtomicInteger sleeps = new AtomicInteger();
        AtomicInteger polls = new AtomicInteger();
        second.await(() -> polls.incrementAndGet() > 1000, sleeps::incrementAndGet, true);
        assertEquals(0, polls.get(), "the one poller's place was taken: no poll");
        assertEquals(1, sleeps.get(), "it slept at once");
        release.set(true);
        t.join(10_000);
        assertFalse(t.isAlive());
        // the place is free again
        second.await(() -> polls.incrementAndGet() > 3, sleeps::incrementAndGet, true);
        assertTrue(polls.get() > 3);
        assertEquals(1, sleeps.get());
    }

    /**
     * A wait that sleeps at once makes the window whole. It is judged by the clock (the wait took
     * less than the window), so a pause of the machine longer than the window within it (2 ms, seen
     * on a loaded CI machine) leaves the window as it was: that wait is not counted, and it is tried
     * again, a few times at most.
     */
    private static void wakeQuickly(Polling.Window w, Polling.Ready ready, Polling.Sleep sleep) throws Exception {
        long before = w.nanos();
        for (int attempt = 0; attempt < 5; attempt++) {
            long began = System.nanoTime();
            w.await(ready, sleep, true);
            boolean quick = System.nanoTime() - began < WINDOW;
            if (w.nanos() == WINDOW) {
                return;
            }
            assertFalse(quick, "a wait of less than the window left the window at " + w.nanos());
            // a slow wait leaves no window, or halves the one it had
            assertTrue(w.nanos() <= before, w.nanos() + " ns after a slow wait from " + before);
            before = w.nanos();
        }
        throw new AssertionError("five waits in a row were paused longer than the window");
    }

    private static void sleep(long nanos) {
        try {
            TimeUnit.NANOSECONDS.sleep(nanos);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
