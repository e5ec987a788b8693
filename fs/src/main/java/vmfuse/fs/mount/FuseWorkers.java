package vmfuse.fs.mount;

import java.util.function.BooleanSupplier;
import java.util.function.Supplier;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import vmfuse.durable.Parking;

/**
 * The threads that read and serve FUSE requests: {@code base} of them, and at least
 * {@code reserve} always free to take the next request, whatever the others wait on. A thread
 * about to wait on another subsystem (journal memory or its store's locks, a sync of its log, an
 * image the reclaimer holds) parks ({@link Parking}); if that would leave fewer than
 * {@code reserve} threads free, a spare is started first, up to {@code max} threads in all. At
 * the bound the wait is refused and the request fails at once: so no stalled subsystem can take
 * every thread, and a flood of waits costs at most {@code max} threads. Waits within the reserve
 * cost nothing but a count (the flushes of a few busy devices); a spare ends after a request once
 * there are more than {@code base} threads, the reserve is free without it, and no spare was
 * needed for {@code linger} (so that a steady load of waits does not start a thread for each).
 */
final class FuseWorkers implements Parking.Pool {
    private static final Logger log = LoggerFactory.getLogger(FuseWorkers.class);

    private final int base;
    private final int reserve;
    private final int max;
    private final long lingerNanos;
    private final String name;
    private final Supplier<BooleanSupplier> server;
    private int threads; // started and not ended
    private int started;
    private int parked; // in a wait that parking() allowed
    private int refused;
    private int peak;
    private long lastLent = System.nanoTime();

    /**
     * {@code server} gives each thread what serves one request at a time: it reads one and
     * serves it, false once the session is over.
     */
    FuseWorkers(int base, int reserve, int max, java.time.Duration linger, String name,
            Supplier<BooleanSupplier> server) {
        if (reserve < 1 || base < reserve || max < base) {
            throw new IllegalArgumentException("threads: base " + base + ", reserve " + reserve + ", max " + max);
        }
        this.base = base;
        this.reserve = reserve;
        this.max = max;
        this.lingerNanos = linger.toNanos();
        this.name = name;
        this.server = server;
    }

    /** Starts the {@code base} threads. */
    void start() {
        for (int i = 0; i < base; i++) {
            Thread t;
            synchronized (this) {
                t = newThread();
            }
            t.start();
        }
    }

    /** A thread counted among {@link #threads}, to start (outside the lock). */
    private Thread newThread() {
        assert Thread.holdsLock(this);
        threads++;
        peak = Math.max(peak, threads);
        return new Thread(this::work, name + "-" + started++);
    }

    private void work() {
        Parking.serve(this);
        boolean spare = false;
        try {
            BooleanSupplier serveOne = server.get();
            while (serveOne.getAsBoolean()) {
                if (mayEnd()) {
                    spare = true;
                    return;
                }
            }
        } finally {
            if (!spare) {
                ended();
            }
        }
    }

    @Override
    public boolean parking() {
        Thread spare;
        synchronized (this) {
            if (threads - parked - 1 >= reserve) {
                parked++;
                if (threads - parked < reserve + 1) {
                    lastLent = System.nanoTime(); // a spare is what keeps the reserve now
                }
                return true;
            }
            if (threads >= max) {
                refuse("the most there may be");
                return false;
            }
            parked++;
            lastLent = System.nanoTime();
            spare = newThread();
        }
        try {
            spare.start();
        } catch (OutOfMemoryError e) { // no native thread to be had: as at the bound
            synchronized (this) {
                parked--;
                threads--;
                refuse("no thread could be started: " + e.getMessage());
            }
            return false;
        }
        return true;
    }

    private void refuse(String why) {
        assert Thread.holdsLock(this);
        refused++;
        if (Integer.bitCount(refused) == 1) { // the 1st, 2nd, 4th, 8th...
            log.warn("{} FUSE threads wait on other subsystems ({}); a request that would wait too is refused "
                    + "({} so far)", parked, why, refused);
        }
    }

    @Override
    public synchronized void unparked() {
        parked--;
    }

    /** After a request: true if this thread ends, a spare no longer needed. */
    private synchronized boolean mayEnd() {
        if (threads > base && threads - 1 - parked >= reserve && System.nanoTime() - lastLent >= lingerNanos) {
            threads--;
            notifyAll();
            return true;
        }
        return false;
    }

    /** A thread ended on its own: the session is over, or serving failed. */
    private synchronized void ended() {
        threads--;
        notifyAll();
    }

    /** Waits until every thread has ended (the session is over). */
    synchronized void awaitEnd() throws InterruptedException {
        while (threads > 0) {
            wait();
        }
    }

    synchronized int threads() {
        return threads;
    }

    synchronized int parked() {
        return parked;
    }

    synchronized int refused() {
        return refused;
    }

    /** Threads started since the start (base and spares). */
    synchronized int started() {
        return started;
    }

    synchronized int peak() {
        return peak;
    }
}
