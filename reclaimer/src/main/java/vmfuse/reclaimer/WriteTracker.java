package vmfuse.reclaimer;

import java.io.IOException;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
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
 *   admit(token, r)    r minus every range written after the token: for each range written
 *                      since the oldest live token (300 s each), the count of its last write is
 *                      kept; what is left becomes pending
 *   beginWrite         a write that lands on pending ranges cuts them out, and the listener
 *                      records the cut durably before the write goes on
 *   punch(r, action)   runs the punch of the still-pending parts of r with every write to the
 *                      image held off, so no write can race a punch of its range
 *
 * Offsets are the image file's, which for a raw image are the guest's.
 *
 * Memory is bounded per image, whatever its guest does (a hostile guest must not exhaust the heap
 * every VM's service shares): Limits says how many written ranges, pending ranges and live
 * tokens. Past the written bound, neighbouring ranges are merged with the later of their counts
 * (and what lies between them taken as written): admits then punch less, never more. Past the
 * pending bound, a notice is refused (busy: the agent sends it again later). Past the token
 * bound, the oldest token goes (its notices are refused as stale: the agent takes a new one).
 */
public final class WriteTracker {
    static final long TOKEN_TTL_NANOS = TimeUnit.SECONDS.toNanos(300);

    /** The bounds of one image's fence state (see the top of the file). */
    public record Limits(int writtenRanges, int pendingRanges, int tokens) {
        public static final Limits DEFAULT = new Limits(16384, 16384, 64);

        public Limits {
            if (writtenRanges < 2 || pendingRanges < 1 || tokens < 1) {
                throw new IllegalArgumentException("reclaim limits must be positive: " + writtenRanges + ", "
                        + pendingRanges + ", " + tokens);
            }
        }

        /** The same bound of written and pending ranges. */
        public static Limits ofRanges(int ranges) {
            return new Limits(Math.max(2, ranges), ranges, DEFAULT.tokens());
        }
    }

    /** Told, before the write that caused it goes on, that pending ranges were written. */
    public interface Listener {
        void written(List<Range> cut) throws IOException;
    }

    /** The punch itself, given the ranges still pending. */
    public interface Punch {
        void run(List<Range> ranges) throws IOException;
    }

    private final ReentrantReadWriteLock gate = new ReentrantReadWriteLock();
    private final long epochBase;
    private volatile Listener listener = cut -> { };
    // guarded by this
    private long count;
    private final TreeMap<Long, Long> tokens = new TreeMap<>(); // token -> issued (nanoTime)
    /** Where a range written since the oldest live token ends, and the count of the last write there. */
    private record Written(long to, long count) {}

    /** Ranges written since the oldest live token, by where they begin; disjoint. */
    private final TreeMap<Long, Written> written = new TreeMap<>();
    private final long validFrom;
    private final ByteRanges pending = new ByteRanges();
    private final Limits limits;

    public WriteTracker(long epochBase) {
        this(epochBase, Limits.DEFAULT);
    }

    public WriteTracker(long epochBase, Limits limits) {
        this.epochBase = epochBase;
        this.count = epochBase;
        this.validFrom = epochBase;
        this.limits = limits;
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
        while (tokens.size() >= limits.tokens() && !tokens.containsKey(count)) {
            tokens.pollFirstEntry(); // the oldest: its notices will be refused as stale
        }
        tokens.put(count, System.nanoTime());
        return count;
    }

    /**
     * The parts of {@code ranges} not written since {@code token}; they become pending. Stale if
     * the token was not given by this tracker, expired, or the writes since it were not all kept.
     */
    public synchronized List<Range> admit(long token, List<Range> ranges) throws ProtocolException {
        prune(System.nanoTime());
        if (token < validFrom || token > count || !tokens.containsKey(token)) {
            throw new ProtocolException("stale-fence", "fence token " + token + " is not a live token of this daemon");
        }
        ByteRanges r = ByteRanges.of(ranges);
        for (Map.Entry<Long, Written> w : written.entrySet()) {
            if (w.getValue().count() > token) {
                r.remove(w.getKey(), w.getValue().to());
            }
        }
        if (pending.count() + r.count() > limits.pendingRanges()) {
            throw new ProtocolException("busy", "this VM has " + pending.count() + " ranges waiting, at most "
                    + limits.pendingRanges() + " (vmfuse mount --reclaim-max-ranges): send it again once they went");
        }
        for (Range x : r.list()) {
            pending.add(x.offset(), x.end());
        }
        return r.list();
    }

    /** Ranges from the notice log at start: pending again (writes that cut them were logged before they ran). */
    public synchronized void restore(List<Range> ranges) {
        for (Range x : ranges) {
            pending.add(x.offset(), x.end());
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
        written.values().removeIf(w -> w.count() <= oldest); // no live token is older than these writes
    }

    /** Keeps that [from, to) was last written by write {@code at}, within the bound. Holding this. */
    private void wrote(long from, long to, long at) {
        Map.Entry<Long, Written> e = written.floorEntry(from);
        if (e != null && e.getKey() < from && e.getValue().to() > from) { // one overlapping the start: keep its head
            Written old = e.getValue();
            written.put(e.getKey(), new Written(from, old.count()));
            if (old.to() > to) {
                written.put(to, old); // and its tail
            }
        }
        while ((e = written.ceilingEntry(from)) != null && e.getKey() < to) {
            written.remove(e.getKey());
            if (e.getValue().to() > to) {
                written.put(to, e.getValue()); // the tail past this write
            }
        }
        written.put(from, new Written(to, at));
        if (written.size() > limits.writtenRanges()) {
            coarsen();
        }
    }

    /**
     * Halves the written ranges: each pair of neighbours becomes one range from the first's start
     * to the second's end, with the later count. What lies between them counts as written then
     * too: admits take out more, never less.
     */
    private void coarsen() {
        TreeMap<Long, Written> merged = new TreeMap<>();
        Map.Entry<Long, Written> first = null;
        for (Map.Entry<Long, Written> e : written.entrySet()) {
            if (first == null) {
                first = e;
            } else {
                merged.put(first.getKey(), new Written(e.getValue().to(), Math.max(first.getValue().count(),
                        e.getValue().count())));
                first = null;
            }
        }
        if (first != null) {
            merged.put(first.getKey(), first.getValue());
        }
        written.clear();
        written.putAll(merged);
    }

    /** How many written ranges are kept (for tests and status). */
    synchronized int writtenRanges() {
        return written.size();
    }

    /** How many live tokens. */
    synchronized int liveTokens() {
        return tokens.size();
    }

    /**
     * Before a write of [offset, offset + length) to the image: counts it, keeps its range for live
     * tokens, and cuts it out of pending ranges (the listener records that durably first). Must be
     * followed by {@link #endWrite()}, also when this throws.
     */
    public void beginWrite(long offset, long length) throws IOException {
        gate.readLock().lock();
        List<Range> cut;
        synchronized (this) {
            count++;
            if (!tokens.isEmpty() && length > 0) {
                wrote(offset, offset + length, count);
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
    public List<Range> punch(List<Range> ranges, Punch punch) throws IOException {
        gate.writeLock().lock();
        try {
            ByteRanges todo = new ByteRanges();
            synchronized (this) {
                for (Range r : ranges) {
                    for (Range x : pending.intersect(r.offset(), r.end())) {
                        todo.add(x.offset(), x.end());
                    }
                }
                for (Range x : todo.list()) {
                    pending.remove(x.offset(), x.end());
                }
            }
            List<Range> list = todo.list();
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
