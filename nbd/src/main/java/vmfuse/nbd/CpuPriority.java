package vmfuse.nbd;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The scheduler's classes, on the CPU: a thread copying a bulk payload (a read or a write of
 * {@link #BULK_BYTES} or more: reading it off the socket, writing it to the disk's cache, sending
 * it back) runs at nice {@link #BULK_NICE}; one doing a small request, at 0. The scheduler decides
 * which request goes to the disk next, but once the host's CPUs are busy, the run queue decides
 * when the thread doing it runs: there a tenant streaming 1 MiB writes, two copies of each
 * through this daemon, held another tenant's 4 KiB write and its flush behind its copies.
 * Work-conserving, as the scheduler is: with the CPUs idle, a niced thread runs at once and at full
 * speed; under contention it still gets its share, only after the small requests' threads.
 *
 * <p>Linux keeps a nice value per thread (setpriority(2) on a thread id). Each thread's class is
 * remembered here, so a change of class costs one system call and a thread that keeps to one class
 * (a streaming client's, a flushing client's) none. A thread is taken to start at 0, as it does: a
 * new thread has its maker's nice value, and the server's are made by threads that never take a
 * class (the acceptor's) or before they take one (a connection's sender). Going back to 0 needs CAP_SYS_NICE (or
 * RLIMIT_NICE): the daemon checks that it can before it hands a {@link Nice} in; if a call fails
 * later anyway, every thread stays at its class of the moment and no more changes are made, with
 * a warning.
 */
public final class CpuPriority {
    private static final Logger log = LoggerFactory.getLogger(CpuPriority.class);

    /** A read or a write of this many bytes or more is bulk. */
    public static final long BULK_BYTES = 128 << 10;
    /** Where a bulk thread runs: ten steps down, about a tenth of a nice-0 thread's CPU when both want it. */
    public static final int BULK_NICE = 10;

    /** Sets the calling thread's nice value; false if the system refused. */
    @FunctionalInterface
    public interface Nice {
        boolean set(int nice);
    }

    /** Every thread at the priority it was started with. */
    public static final CpuPriority NONE = new CpuPriority(null);

    private final Nice nice;
    /** The calling thread's class as last set: bulk or not. */
    private final ThreadLocal<boolean[]> bulk = ThreadLocal.withInitial(() -> new boolean[1]);
    private volatile boolean failed;

    /** Classes set through {@code nice}, which the caller found can lower and raise a thread's priority. */
    public CpuPriority(Nice nice) {
        this.nice = nice;
    }

    /** Whether threads change their priority by class (false for {@link #NONE}, or after a refused change). */
    boolean enabled() {
        return nice != null && !failed;
    }

    /**
     * The calling thread is about to do a request that copies {@code payload} bytes through this
     * daemon (a read's or a write's length, FUA or not; 0 for a flush, a trim, a zeroing): it takes
     * that request's class, bulk from {@link #BULK_BYTES}.
     */
    void doing(long payload) {
        if (nice == null || failed) {
            return;
        }
        boolean want = payload >= BULK_BYTES;
        boolean[] now = bulk.get();
        if (now[0] == want) {
            return;
        }
        if (!nice.set(want ? BULK_NICE : 0)) {
            failed = true;
            log.warn("nbd cpu priority: thread {} could not go to nice {}; bulk requests no longer yield the CPU "
                    + "to small ones", Thread.currentThread().getName(), want ? BULK_NICE : 0);
            return;
        }
        now[0] = want;
    }
}
