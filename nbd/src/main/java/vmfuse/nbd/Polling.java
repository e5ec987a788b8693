package vmfuse.nbd;

import java.io.IOException;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Busy-polling a client's socket for a moment before sleeping on it, as Linux's busy_poll and
 * KVM's halt-polling do: the next request of a client that waits for each answer comes a few
 * microseconds after the answer, and a thread that slept in the meantime pays a wake-up (on a
 * virtual machine's halted CPU, tens of microseconds: more than a request in the page cache).
 *
 * <p>Two waits are told apart. Between requests, the window adapts per connection, much as
 * halt-polling's does: it shrinks by half when a poll ran out without a request (to none below
 * {@link #MIN_NANOS}), and is whole again when a wait that slept turned out shorter than the whole
 * window; so a client that sends rarely is soon not polled for, and one that sends at once again
 * is polled for at once. (Growing back by doubling, as halt-polling does, never got back here: a
 * window too short for the client's next request misses, and shrinks again.) Within a request
 * (the rest of a header or payload the client is sending now) the whole window is polled and
 * nothing learnt: such a wait says nothing of the client's pace.
 *
 * <p>No poll for the next request after one that took longer than the whole window to do (a
 * read from the disk, a flush): its client waited that long anyway, and the poll made its next
 * request slower, not quicker. Measured here, fio's nbd engine at depth 1, interleaved rounds:
 * 4 KiB reads of an image just dropped from the page cache 5,876 a second with the poll, 6,814
 * without (nbdkit 6,437); qemu-img bench's 4 KiB writes with a flush after each, 2,538 against
 * 2,801; and 4 KiB writes in the page cache, quick enough to be polled for as before, lost nothing:
 * 11,501 before the change, 14,059 after, in the same runs.
 * (Why, not proven: the guest's halt-polling is off here, so an idle CPU halts at once, and the
 * CPU this thread kept busy may be the one the client's thread would have woken on.)
 *
 * <p>At most {@code maxPollers} threads poll at once, across all connections, so polling never
 * takes more than that many CPUs from the guests; a connection that finds them all polling sleeps.
 */
final class Polling {
    /** A window that shrinks below this is none: such a poll would hardly ever catch a request. */
    static final long MIN_NANOS = 10_000;

    private final long maxNanos;
    private final int maxPollers;
    private final AtomicInteger free;

    /** Polls up to {@code maxNanos} per wait (0: never), on at most {@code maxPollers} threads at once. */
    Polling(long maxNanos, int maxPollers) {
        if (maxNanos < 0 || maxPollers < 1) {
            throw new IllegalArgumentException("polling " + maxNanos + " ns on " + maxPollers + " threads");
        }
        this.maxNanos = maxNanos;
        this.maxPollers = maxPollers;
        this.free = new AtomicInteger(maxPollers);
    }

    /** How many threads may poll at once. */
    int maxPollers() {
        return maxPollers;
    }

    /** Half the CPUs, at least one: what polling may take at most. */
    static int defaultPollers() {
        return Math.max(1, Runtime.getRuntime().availableProcessors() / 2);
    }

    /** One connection's window: waited on by the connection's reading thread only ({@link Window#done}: any thread). */
    Window window() {
        return new Window();
    }

    /** Something to wait for: true once it is there. */
    @FunctionalInterface
    interface Ready {
        boolean now() throws IOException;
    }

    /** What a connection waits for, and how: a wait that polls in vain ends in {@code sleep}. */
    @FunctionalInterface
    interface Sleep {
        void until() throws IOException;
    }

    final class Window {
        private long nanos = maxNanos;
        /**
         * How long the last request timed took to do, set by whichever thread did it: a read, a
         * write or another kind that succeeded (not a failure, nor one longer than a buffer, done a
         * piece at a time: those take milliseconds, beside which a poll costs nothing).
         */
        private volatile long lastDone;

        private Window() {}

        /** A request of this connection was done in {@code nanos} (by any thread): see the top. */
        void done(long nanos) {
            lastDone = nanos;
        }

        /**
         * Waits for {@code ready}: polling first, then in {@code sleep}. {@code between}: the wait
         * is for the client's next request (the window learns from it), not for the rest of one.
         */
        void await(Ready ready, Sleep sleep, boolean between) throws IOException {
            long began = System.nanoTime();
            if (between && lastDone > maxNanos) { // after a slow request: no poll, and nothing learnt
                sleep.until();
                return;
            }
            long window = between ? nanos : maxNanos;
            if (window > 0 && take()) {
                try {
                    long end = began + window;
                    do {
                        if (ready.now()) {
                            return;
                        }
                        Thread.onSpinWait();
                    } while (System.nanoTime() - end < 0);
                } finally {
                    free.incrementAndGet();
                }
                if (between) {
                    nanos = nanos / 2 < MIN_NANOS ? 0 : nanos / 2;
                }
            }
            sleep.until();
            if (between && System.nanoTime() - began < maxNanos) {
                nanos = maxNanos;
            }
        }

        /** The window now, in nanoseconds. */
        long nanos() {
            return nanos;
        }

        private boolean take() {
            while (true) {
                int f = free.get();
                if (f == 0) {
                    return false;
                }
                if (free.compareAndSet(f, f - 1)) {
                    return true;
                }
            }
        }
    }
}
