package vmfuse.durable;

import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Lock;

/**
 * A thread about to wait on what another part of the daemon decides (journal memory that only a
 * checkpoint frees, an image the reclaimer holds closed) says so to the pool it serves, as
 * {@code ForkJoinPool.managedBlock} does: the pool lends another thread meanwhile, so that
 * requests for everything else are still read and served, or, at the pool's bound, refuses the
 * wait, and the caller fails at once with its own error. A thread of no pool (a timer, a test)
 * waits as it would.
 *
 * <pre>
 *   if (!Parking.begin()) throw ...;   // refused: too many requests already wait
 *   try { wait } finally { Parking.end(); }
 * </pre>
 * A wait that is usually short (a lock) parks only when it would block: {@link #lock}.
 */
public final class Parking {
    /** The pool a thread serves (FUSE's request loop). */
    public interface Pool {
        /** Before a wait: true if it may go on (a thread is free, or was lent), false to refuse it. */
        boolean parking();

        /** After a wait that {@link #parking} allowed. */
        void unparked();
    }

    /** A thread's pool, and how deep it is in waits (a wait inside a wait is one wait to its pool). */
    private static final class Served {
        final Pool pool;
        int depth;

        Served(Pool pool) {
            this.pool = pool;
        }
    }

    private static final ThreadLocal<Served> SERVED = new ThreadLocal<>();

    private Parking() {
    }

    /** Called by each thread of {@code pool} before it serves anything (null: of no pool). */
    public static void serve(Pool pool) {
        SERVED.set(pool == null ? null : new Served(pool));
    }

    /** Before a wait: false if this thread's pool refuses it. */
    public static boolean begin() {
        Served s = SERVED.get();
        if (s == null) {
            return true;
        }
        if (s.depth > 0 || s.pool.parking()) {
            s.depth++;
            return true;
        }
        return false;
    }

    /** After a wait {@link #begin} allowed. */
    public static void end() {
        Served s = SERVED.get();
        if (s != null && --s.depth == 0) {
            s.pool.unparked();
        }
    }

    /** A wait to run parked. */
    public interface Wait<T, E extends Exception> {
        T run() throws E;
    }

    /** Runs {@code wait} parked; throws {@code refused}'s exception, without running it, if the pool refuses. */
    public static <T, E extends Exception> T parked(Wait<T, E> wait, java.util.function.Supplier<E> refused) throws E {
        if (!begin()) {
            throw refused.get();
        }
        try {
            return wait.run();
        } finally {
            end();
        }
    }

    /**
     * Takes {@code lock}: at once if it is free (with its own policy towards threads queued for it,
     * unlike a barging tryLock()), else parked. False, without it, if the pool refuses the wait.
     */
    public static boolean lock(Lock lock) {
        try {
            if (lock.tryLock(0, TimeUnit.NANOSECONDS)) {
                return true;
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (!begin()) {
            return false;
        }
        try {
            lock.lock();
            return true;
        } finally {
            end();
        }
    }
}
