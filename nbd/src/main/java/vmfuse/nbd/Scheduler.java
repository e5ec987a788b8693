package vmfuse.nbd;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Which request goes to the disk next, in the manner of mClock (Gulati et al., OSDI 2010; Ceph's
 * dmClock): a fixed set of workers takes requests from per-share queues, a share being what the
 * operator set a {@link Qos} on (an export, or a tenant's exports together). Three controls per share:
 *
 *   reservation  IOPS it gets whatever the others want, when it asks for them;
 *   weight       its part of what is left, against the other shares that are asking (in cost:
 *                one unit per request and one per 64 KiB it moves, so weights split bandwidth);
 *   limit        IOPS it never gets more than, even with the disk idle.
 *
 * Work-conserving: a share that asks for nothing leaves its part to the others, and gains no
 * credit for it (its weight tag starts at the current virtual time when it asks again). A share
 * that was served by weight at least at its reservation's rate is not owed a reservation turn, so a
 * reservation is a floor, not an addition (a turn owed to the reservation costs nothing of the
 * weight, and a turn by weight counts toward the reservation). Within a share, requests wait in a queue per {@link
 * Kind}, taken in turn, so a backlog of trims does not hold up a read behind it.
 *
 * The workers are few on purpose: the disk's queue is where a flood from one share would make
 * another's flush wait, so the order is decided here, where requests still wait.
 */
public final class Scheduler implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(Scheduler.class);
    /** A limited share may catch up on this much time it was late by, no more. */
    private static final long CATCH_UP_NANOS = 50_000_000L;
    static final long COST_UNIT = 64 * 1024;

    /** A request's class: each has its own queue in a share. */
    public enum Kind {
        READ, WRITE, FLUSH, TRIM;

        public String label() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }

        /**
         * Of a request of this kind that moves {@code bytes} (as weights count them), what is
         * copied through this daemon: all of a read's or a write's (FUA: a flush here), none of a
         * trim's or a zeroing's (space punched or zeroed).
         */
        long copied(long bytes) {
            return this == TRIM ? 0 : bytes;
        }
    }

    /** A share's controls: weight 1..1000; reservation and limit in IOPS, 0 for none. */
    public record Qos(int weight, long reservationIops, long limitIops) {
        public static final Qos DEFAULT = new Qos(1, 0, 0);
        public static final int MAX_WEIGHT = 1000;
        public static final long MAX_IOPS = 10_000_000L;

        public Qos {
            if (weight < 1 || weight > MAX_WEIGHT) {
                throw new IllegalArgumentException("weight " + weight + " is not in 1.." + MAX_WEIGHT);
            }
            if (reservationIops < 0 || reservationIops > MAX_IOPS || limitIops < 0 || limitIops > MAX_IOPS) {
                throw new IllegalArgumentException("IOPS are 0 (none) to " + MAX_IOPS);
            }
            if (limitIops > 0 && reservationIops > limitIops) {
                throw new IllegalArgumentException(
                        "a reservation of " + reservationIops + " IOPS above the limit of " + limitIops);
            }
        }
    }

    /**
     * What a share has been served, for status and metrics, by {@link Kind} (the arrays' index).
     * Latency is from arrival to the end of the work: {@code latency[kind][i]} counts requests
     * that took 2^i to 2^(i+1) - 1 microseconds (the last bucket: that or longer), {@code
     * latencyNanos[kind]} their sum; p50 and p99 are over every kind, the upper bound of the bucket
     * that holds them.
     */
    public record Stats(String share, Qos qos, int users, int queued, long[] requests, long[] bytes,
            long[][] latency, long[] latencyNanos, long p50Micros, long p99Micros) {}

    /** Buckets of a {@link Stats#latency()} row: the last holds every request of 2^39 µs (6 days) or longer. */
    public static final int LATENCY_BUCKETS = 40;

    private record Task(Kind kind, long bytes, double cost, long arrived, Runnable work) {
        /** Arrived now; its cost one unit for the request and one per COST_UNIT it moves. */
        static Task now(Kind kind, long bytes, Runnable work) {
            return new Task(kind, bytes, 1 + (double) bytes / COST_UNIT, System.nanoTime(), work);
        }
    }

    private final ReentrantLock lock = new ReentrantLock();
    private final Condition ready = lock.newCondition();
    /** Signalled when nothing waits any more: background work goes then. */
    private final Condition idle = lock.newCondition();
    private long background;
    private long backgroundYields;
    private final Map<String, Share> shares = new LinkedHashMap<>();
    private final List<Thread> workers = new ArrayList<>();
    /** Requests being done now, by workers or by callers ({@link Share#runNow}): at most one per worker. */
    private int running;
    /** Requests waiting, in all shares. */
    private int waiting;
    /** Workers asleep on {@link #ready}, and of them how many were signalled and are not yet awake. */
    private int sleeping;
    private int woken;
    /** The highest weight tag dispatched by weight: where a share that starts asking begins. */
    private double virtualTime;
    private boolean closed;

    private final CpuPriority cpu;

    /** Starts {@code workers} worker threads, at the priority they were started with. */
    public Scheduler(int workers) {
        this(workers, CpuPriority.NONE);
    }

    /** Starts {@code workers} worker threads; each takes a request's CPU class from {@code cpu} before doing it. */
    public Scheduler(int workers, CpuPriority cpu) {
        if (workers < 1) {
            throw new IllegalArgumentException("a scheduler needs a worker");
        }
        this.cpu = cpu;
        for (int i = 0; i < workers; i++) {
            Thread t = new Thread(this::work, "io-" + i);
            t.setDaemon(true);
            this.workers.add(t);
            t.start();
        }
    }

    /**
     * A share's queues, made with {@code qos} if it has none yet: one per user (a connection);
     * {@link Share#release} when done, and a share with no user, nothing queued and default
     * controls is forgotten.
     */
    public Share share(String name) {
        lock.lock();
        try {
            Share s = shares.computeIfAbsent(name, Share::new);
            s.users++;
            return s;
        } finally {
            lock.unlock();
        }
    }

    /** Sets a share's controls now, for the requests it dispatches next; kept while the scheduler runs. */
    public void set(String name, Qos qos) {
        lock.lock();
        try {
            Share s = shares.computeIfAbsent(name, Share::new);
            s.qos = qos;
            s.pinned = !qos.equals(Qos.DEFAULT);
            if (!s.pinned && s.users == 0 && s.queued == 0) {
                shares.remove(name);
            }
            ready.signalAll();
        } finally {
            lock.unlock();
        }
        log.info("scheduler share={} weight={} reservation_iops={} limit_iops={}", name, qos.weight(),
                qos.reservationIops(), qos.limitIops());
    }

    /**
     * Background work (the reclaimer's punches) goes below the guests: this returns once no guest
     * request waits that could go now (one held back by its share's limit does not count), or
     * after {@code maxWaitNanos}, whichever comes first, and the
     * caller then does its work on its own thread. It never takes a worker's place, so a guest
     * request that itself waits on the background work (a write to a range being punched) cannot
     * deadlock with it; the wait bounds how long it yields.
     */
    public void yieldToGuests(long maxWaitNanos) throws InterruptedException {
        long deadline = System.nanoTime() + maxWaitNanos;
        lock.lock();
        try {
            boolean yielded = false;
            while (dispatchableWaiting(System.nanoTime()) && !closed) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    break;
                }
                yielded = true;
                idle.awaitNanos(Math.min(left, 1_000_000L)); // woken as the queues empty, or every ms
            }
            background++;
            if (yielded) {
                backgroundYields++;
            }
        } finally {
            lock.unlock();
        }
    }

    /** Whether a guest request waits that could go now (one held back by its share's limit could not). */
    private boolean dispatchableWaiting(long now) {
        if (waiting == 0) {
            return false;
        }
        for (Share s : shares.values()) {
            if (s.queued > 0 && (s.qos.limitIops() == 0 || s.limitDue <= now)) {
                return true;
            }
        }
        return false;
    }

    /** How the threads doing requests take their CPU class. */
    CpuPriority cpu() {
        return cpu;
    }

    /** Background work done and, of it, how much first yielded to waiting guest requests. */
    public long[] backgroundCounts() {
        lock.lock();
        try {
            return new long[] {background, backgroundYields};
        } finally {
            lock.unlock();
        }
    }

    /** Every share known now, in the order they were made. */
    public List<Stats> stats() {
        lock.lock();
        try {
            List<Stats> out = new ArrayList<>();
            for (Share s : shares.values()) {
                out.add(s.stats());
            }
            return Collections.unmodifiableList(out);
        } finally {
            lock.unlock();
        }
    }

    /** One share: its queues, its tags, its counts. Guarded by the scheduler's lock. */
    public final class Share {
        private final String name;
        @SuppressWarnings("unchecked")
        private final ArrayDeque<Task>[] queues = new ArrayDeque[Kind.values().length];
        private Qos qos = Qos.DEFAULT;
        private boolean pinned;
        private int users;
        private int queued;
        private int nextKind;
        private double weightTag;
        private long reservationDue;
        private long limitDue = Long.MIN_VALUE;
        private final long[] requests = new long[Kind.values().length];
        private final long[] bytes = new long[Kind.values().length];
        private final long[][] latency = new long[Kind.values().length][LATENCY_BUCKETS];
        private final long[] latencyNanos = new long[Kind.values().length];

        private Share(String name) {
            this.name = name;
            for (int i = 0; i < queues.length; i++) {
                queues[i] = new ArrayDeque<>();
            }
        }

        public String name() {
            return name;
        }

        /**
         * Queues {@code work} (which does the request and answers it; it must not throw) to run
         * on a worker when this share's turn comes. {@code bytes}: what it moves (0 for a flush).
         */
        public void submit(Kind kind, long bytes, Runnable work) {
            Task t = Task.now(kind, bytes, work);
            lock.lock();
            try {
                if (closed) {
                    throw new IllegalStateException("the scheduler is closed");
                }
                if (queued == 0) { // asking again: no credit for the time it asked nothing
                    weightTag = Math.max(weightTag, virtualTime);
                }
                queues[kind.ordinal()].addLast(t);
                queued++;
                waiting++;
                wakeOne();
            } finally {
                lock.unlock();
            }
        }

        /**
         * Does {@code work} now, on the caller's thread, if nothing waits in any share, a worker's
         * place is free, and this share is under its limit: what a worker would do, without the
         * hand-over. False (and nothing done) if it must be {@link #submit}ted.
         */
        public boolean runNow(Kind kind, long bytes, Runnable work) {
            Task t = Task.now(kind, bytes, work);
            lock.lock();
            try {
                if (closed || waiting > 0 || running >= workers.size()
                        || qos.limitIops() > 0 && limitDue > t.arrived()) {
                    return false;
                }
                weightTag = Math.max(weightTag, virtualTime);
                charge(t, t.arrived(), false);
                running++;
            } finally {
                lock.unlock();
            }
            try {
                work.run();
            } finally {
                lock.lock();
                try {
                    running--;
                    done(t, System.nanoTime());
                    wakeOne(); // a worker's place is free again
                } finally {
                    lock.unlock();
                }
            }
            return true;
        }

        /** The user is done with the share (its requests all answered). */
        public void release() {
            lock.lock();
            try {
                users--;
                if (users <= 0 && queued == 0 && !pinned) {
                    shares.remove(name, this);
                }
            } finally {
                lock.unlock();
            }
        }

        private Task take(long now, boolean byReservation) {
            Task t = null;
            for (int i = 0; i < queues.length && t == null; i++) {
                int k = (nextKind + i) % queues.length;
                t = queues[k].pollFirst();
                if (t != null) {
                    nextKind = k + 1;
                }
            }
            queued--;
            if (--waiting == 0) {
                idle.signalAll();
            }
            charge(t, now, byReservation);
            return t;
        }

        /**
         * Advances the share's tags for {@code t}, dispatched now. A turn owed to its reservation
         * costs it nothing of its weight (as in mClock); a turn by weight counts toward its
         * reservation. The virtual time only moves forward, with turns by weight.
         */
        private void charge(Task t, long now, boolean byReservation) {
            if (!byReservation) {
                virtualTime = Math.max(virtualTime, weightTag);
                weightTag += t.cost() / qos.weight();
            }
            if (qos.reservationIops() > 0) {
                long interval = 1_000_000_000L / qos.reservationIops();
                long due = Math.max(reservationDue + interval, now);
                // served by weight: counts toward the reservation, but earns no more than one turn ahead
                reservationDue = byReservation ? due : Math.min(due, now + interval);
            }
            if (qos.limitIops() > 0) {
                limitDue = Math.max(limitDue, now - CATCH_UP_NANOS) + 1_000_000_000L / qos.limitIops();
            }
        }

        private void done(Task t, long now) {
            requests[t.kind().ordinal()]++;
            bytes[t.kind().ordinal()] += t.bytes();
            long nanos = Math.max(0, now - t.arrived());
            latency[t.kind().ordinal()][Math.min(LATENCY_BUCKETS - 1, 63 - Long.numberOfLeadingZeros(Math.max(1, nanos / 1000)))]++;
            latencyNanos[t.kind().ordinal()] += nanos;
            if (users <= 0 && queued == 0 && !pinned) {
                shares.remove(name, this);
            }
        }

        /** The upper bound of the bucket holding the {@code q} quantile of latencies, in microseconds. */
        private long quantile(double q) {
            long[] all = new long[LATENCY_BUCKETS];
            long total = 0;
            for (long[] kind : latency) {
                for (int i = 0; i < LATENCY_BUCKETS; i++) {
                    all[i] += kind[i];
                    total += kind[i];
                }
            }
            if (total == 0) {
                return 0;
            }
            long seen = 0;
            for (int i = 0; i < LATENCY_BUCKETS; i++) {
                seen += all[i];
                if (seen >= Math.ceil(q * total)) {
                    return (1L << (i + 1)) - 1;
                }
            }
            return Long.MAX_VALUE;
        }

        private Stats stats() {
            long[][] lat = new long[latency.length][];
            for (int k = 0; k < lat.length; k++) {
                lat[k] = latency[k].clone();
            }
            return new Stats(name, qos, users, queued, requests.clone(), bytes.clone(), lat, latencyNanos.clone(),
                    quantile(0.5), quantile(0.99));
        }
    }

    /**
     * The next request, or null if none may go now; {@code wait[0]} is then how long until a
     * limited share may go again (0: until something is submitted).
     */
    private Task pick(long now, long[] wait, Share[] from) {
        Share best = null;
        for (Share s : shares.values()) { // reservations first: a share owed a turn, most overdue first
            if (s.queued > 0 && s.qos.reservationIops() > 0 && s.reservationDue <= now
                    && (best == null || s.reservationDue < best.reservationDue)) {
                best = s;
            }
        }
        if (best != null) {
            from[0] = best;
            return best.take(now, true);
        }
        wait[0] = 0;
        for (Share s : shares.values()) { // then by weight, among the shares under their limits
            if (s.queued == 0) {
                continue;
            }
            if (s.qos.limitIops() > 0 && s.limitDue > now && !closed) { // closing: what is left goes at once
                long w = s.limitDue - now;
                wait[0] = wait[0] == 0 ? w : Math.min(wait[0], w);
                continue;
            }
            if (best == null || s.weightTag < best.weightTag) {
                best = s;
            }
        }
        if (best == null) {
            return null;
        }
        from[0] = best;
        return best.take(now, false);
    }

    private void work() {
        long[] wait = new long[1];
        Share[] from = new Share[1];
        while (true) {
            Task t;
            lock.lock();
            try {
                while (true) {
                    if (closed && waiting == 0) {
                        return;
                    }
                    wait[0] = 0;
                    t = running < workers.size() ? pick(System.nanoTime(), wait, from) : null;
                    if (t != null) {
                        running++;
                        break;
                    }
                    sleeping++;
                    try {
                        if (wait[0] > 0) {
                            ready.awaitNanos(wait[0]);
                        } else {
                            ready.await();
                        }
                    } finally {
                        sleeping--;
                        if (woken > 0) {
                            woken--;
                        }
                    }
                }
            } catch (InterruptedException e) {
                return;
            } finally {
                lock.unlock();
            }
            try {
                cpu.doing(t.kind().copied(t.bytes()));
                t.work().run();
            } catch (RuntimeException | Error e) { // a task answers its own failures; this is a bug
                log.error("scheduler share={} request failed unexpectedly", from[0].name, e);
            }
            lock.lock();
            try {
                running--;
                from[0].done(t, System.nanoTime()); // and this worker looks for the next itself
            } finally {
                lock.unlock();
            }
        }
    }

    /**
     * Wakes a sleeping worker for a waiting request that no worker woken before is on its way
     * to: one wake-up per such request, and none once a worker is done with a request (it looks
     * for the next itself before it sleeps). It used to signal at every submit and every end, and
     * each woken worker that found nothing went back to sleep: a wake-up and a sleep per request.
     */
    private void wakeOne() {
        if (waiting > woken && sleeping > woken) {
            woken++;
            ready.signal();
        }
    }

    /** Runs what is queued (limits no longer apply), then stops the workers (waiting up to 30 s for them). */
    @Override
    public void close() {
        stop();
    }

    /**
     * As {@link #close()}; true if every worker ended, false if one is still in a request after
     * 30 s (its export's files must then stay open: see the daemon's shutdown).
     */
    public boolean stop() {
        lock.lock();
        try {
            closed = true;
            ready.signalAll();
        } finally {
            lock.unlock();
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        for (Thread t : workers) {
            try {
                t.join(Math.max(1, (deadline - System.nanoTime()) / 1_000_000));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            }
            if (t.isAlive()) {
                log.warn("scheduler worker {} still in a request after 30 s", t.getName());
            }
        }
        for (Thread t : workers) {
            if (t.isAlive()) {
                return false;
            }
        }
        return true;
    }
}
