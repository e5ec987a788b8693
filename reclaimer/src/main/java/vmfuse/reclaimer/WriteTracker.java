package vmfuse.reclaimer;

import java.io.IOException;
import java.util.ArrayDeque;
import java.util.Iterator;
import java.util.List;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/*
 * The fence between a guest's writes and the punches of what it deleted, for one image
 * (PROTOCOL.md, "What the daemon guarantees"). The filesystem calls beginWrite/endWrite around
 * every write to the image; the reclaimer asks for tokens, admits notices and punches.
 *
 *   token()            the write count now (counts start at the daemon's start time in ms << 20,
 *                      so a token from before a restart is recognised as stale)
 *   admit(token, r)    r minus every range written after the token: the writes since the oldest
 *                      live token are kept for this (at most MAX_LOG of them, 300 s each); what
 *                      is left becomes pending
 *   beginWrite         a write that lands on pending ranges cuts them out, and the listener
 *                      records the cut durably before the write goes on
 *   punch(r, action)   runs the punch of the still-pending parts of r with every write to the
 *                      image held off, so no write can race a punch of its range
 *
 * Offsets are the image file's, which for a raw image are the guest's.
 */
public final class WriteTracker {
    static final long TOKEN_TTL_NANOS = TimeUnit.SECONDS.toNanos(300);
    static final int MAX_LOG = 1 << 20;

    /** Told, before the write that caused it goes on, that pending ranges were written. */
    public interface Listener {
        void written(List<long[]> cut) throws IOException;
    }

    /** The punch itself, given the ranges still pending. */
    public interface Punch {
        void run(List<long[]> ranges) throws IOException;
    }

    private final ReentrantReadWriteLock gate = new ReentrantReadWriteLock();
    private final long epochBase;
    private volatile Listener listener = cut -> { };
    // guarded by this
    private long count;
    private final TreeMap<Long, Long> tokens = new TreeMap<>(); // token -> issued (nanoTime)
    private final ArrayDeque<long[]> log = new ArrayDeque<>(); // {count, from, to}
    private long validFrom;
    private final ByteRanges pending = new ByteRanges();

    public WriteTracker(long epochBase) {
        this.epochBase = epochBase;
        this.count = epochBase;
        this.validFrom = epochBase;
    }

    /** The epoch base of a daemon started now. */
    public static long newEpoch() {
        return System.currentTimeMillis() << 20;
    }

    public void listener(Listener l) {
        listener = l;
    }

    /** A fence token: the write count now. */
    public synchronized long token() {
        prune(System.nanoTime());
        tokens.put(count, System.nanoTime());
        return count;
    }

    /**
     * The parts of {@code ranges} not written since {@code token}; they become pending. Stale if
     * the token was not given by this tracker, expired, or the writes since it were not all kept.
     */
    public synchronized List<long[]> admit(long token, List<long[]> ranges) throws ProtocolException {
        prune(System.nanoTime());
        if (token < validFrom || token > count || !tokens.containsKey(token)) {
            throw new ProtocolException("stale-fence", "fence token " + token + " is not a live token of this daemon");
        }
        ByteRanges r = ByteRanges.of(ranges);
        for (long[] w : log) {
            if (w[0] > token) {
                r.remove(w[1], w[2]);
            }
        }
        for (long[] x : r.list()) {
            pending.add(x[0], x[0] + x[1]);
        }
        return r.list();
    }

    /** Ranges from the notice log at start: pending again (writes that cut them were logged before they ran). */
    public synchronized void restore(List<long[]> ranges) {
        for (long[] x : ranges) {
            pending.add(x[0], x[0] + x[1]);
        }
    }

    /** Pending bytes. */
    public synchronized long pendingBytes() {
        return pending.bytes();
    }

    private void prune(long now) {
        for (Iterator<Long> it = tokens.values().iterator(); it.hasNext(); ) {
            if (now - it.next() > TOKEN_TTL_NANOS) {
                it.remove();
            }
        }
        long oldest = tokens.isEmpty() ? Long.MAX_VALUE : tokens.firstKey();
        while (!log.isEmpty() && log.peekFirst()[0] <= oldest) {
            log.pollFirst();
        }
    }

    /**
     * Before a write of [offset, offset + length) to the image: counts it, keeps its range for live
     * tokens, and cuts it out of pending ranges (the listener records that durably first). Must be
     * followed by {@link #endWrite()}, also when this throws.
     */
    public void beginWrite(long offset, long length) throws IOException {
        gate.readLock().lock();
        List<long[]> cut;
        synchronized (this) {
            count++;
            if (!tokens.isEmpty()) {
                if (log.size() >= MAX_LOG) {
                    log.clear();
                    validFrom = count; // tokens before this write can no longer be checked
                    tokens.clear();
                } else {
                    log.addLast(new long[] {count, offset, offset + length});
                }
            }
            cut = pending.isEmpty() ? List.of() : pending.remove(offset, offset + length);
        }
        if (!cut.isEmpty()) {
            try {
                listener.written(cut);
            } catch (IOException | RuntimeException e) {
                restore(cut); // the cut is not recorded: the write must fail, the ranges stay guarded
                throw e;
            }
        }
    }

    public void endWrite() {
        gate.readLock().unlock();
    }

    /**
     * Runs {@code punch} on the parts of {@code ranges} still pending, with writes to the image
     * held off until it returns; they stop being pending. Returns the ranges given to it.
     */
    public List<long[]> punch(List<long[]> ranges, Punch punch) throws IOException {
        gate.writeLock().lock();
        try {
            ByteRanges todo = new ByteRanges();
            synchronized (this) {
                for (long[] r : ranges) {
                    for (long[] x : pending.intersect(r[0], r[0] + r[1])) {
                        todo.add(x[0], x[0] + x[1]);
                    }
                }
                for (long[] x : todo.list()) {
                    pending.remove(x[0], x[0] + x[1]);
                }
            }
            List<long[]> list = todo.list();
            try {
                punch.run(list);
            } catch (IOException | RuntimeException e) {
                restore(list); // not done: still pending, still guarded against writes
                throw e;
            }
            return list;
        } finally {
            gate.writeLock().unlock();
        }
    }
}
