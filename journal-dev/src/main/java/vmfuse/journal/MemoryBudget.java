package vmfuse.journal;

import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import vmfuse.durable.Parking;

/**
 * The bound on the blocks a journal store's devices hold in memory (--journal-memory), and the
 * requests for the checkpoint that frees them.
 *
 * <p>Devices count the blocks they take and give back ({@link #added}, {@link #released}); a
 * write first {@link #admit}s itself, waiting while memory is at the bound until a checkpoint
 * frees some, and failing with that checkpoint's error if one tried after the wait began failed
 * (ENOSPC for a full disk), or with EIO after 120 s without one. The checkpoint thread waits for
 * requests here ({@link #awaitCheckpointRequest}) and reports how each went. One monitor guards
 * both: writers wait on it for memory, the checkpointer for a request.
 */
final class MemoryBudget {
    private static final long WAIT_NANOS = TimeUnit.SECONDS.toNanos(120);

    private final long limit;
    /** Blocks held in memory by every device (dirty and frozen). */
    private final AtomicLong blocks = new AtomicLong();
    /** Where those blocks are, off the heap. */
    private final BlockMemory memory = new BlockMemory();
    private final Object monitor = new Object();
    private boolean checkpointRequested; // guarded by monitor
    private boolean closed; // guarded by monitor
    /** The last checkpoint's failure (null after a success), and when (System.nanoTime()). */
    private volatile StoreException lastFailure;
    private volatile long lastFailureAt;

    MemoryBudget(long limitBytes) throws StoreException {
        if (limitBytes < 4L << 20) {
            throw new StoreException(StoreException.EINVAL, "journal memory must be at least 4 MiB, not " + limitBytes);
        }
        this.limit = limitBytes;
    }

    BlockMemory blockMemory() {
        return memory;
    }

    long limit() {
        return limit;
    }

    /** Bytes of blocks held. */
    long held() {
        return blocks.get() * RadixBlockStore.BLOCK_SIZE;
    }

    /** Blocks entered memory (a device's dirty copy). */
    void added(long n) {
        blocks.addAndGet(n);
    }

    /** Blocks left memory (written into MapDB, overwritten, zeroed, deleted): wakes writers once below the bound. */
    void released(long n) {
        if (n != 0 && blocks.addAndGet(-n) * RadixBlockStore.BLOCK_SIZE < limit) {
            synchronized (monitor) {
                monitor.notifyAll();
            }
        }
    }

    /**
     * Before a write: returns at once below the bound; at it, asks for a checkpoint and waits, a
     * {@link Parking} (EIO at once if the caller's pool refuses it), until memory is below the
     * bound again.
     */
    void admit() throws StoreException {
        if (held() < limit) {
            return;
        }
        long since = System.nanoTime();
        requestCheckpoint();
        Parking.parked(() -> {
            awaitRoom(since, since + WAIT_NANOS);
            return null;
        }, () -> new StoreException(StoreException.EIO, "journal memory is full (" + (limit >> 20)
                + " MiB), and too many requests already wait on it or on other subsystems"));
    }

    private void awaitRoom(long since, long deadline) throws StoreException {
        synchronized (monitor) {
            while (held() >= limit) {
                if (closed) {
                    throw new StoreException(StoreException.EIO, "the journal store is closed");
                }
                StoreException f = lastFailure;
                if (f != null && lastFailureAt - since > 0) {
                    throw new StoreException(f.errno(), "journal memory is full (" + (limit >> 20)
                            + " MiB) and the checkpoint that frees it failed: " + f.getMessage(), f);
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    throw new StoreException(StoreException.EIO, "journal memory is full (" + (limit >> 20)
                            + " MiB) and no checkpoint freed any of it in 120 s");
                }
                try {
                    monitor.wait(Math.min(100, TimeUnit.NANOSECONDS.toMillis(left) + 1));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new StoreException(StoreException.EIO, "interrupted waiting for journal memory");
                }
            }
        }
    }

    /** Wakes the checkpoint thread. */
    void requestCheckpoint() {
        synchronized (monitor) {
            checkpointRequested = true;
            monitor.notifyAll();
        }
    }

    /** The checkpoint thread: waits for a request; false once closed (or interrupted). */
    boolean awaitCheckpointRequest() {
        synchronized (monitor) {
            while (!checkpointRequested && !closed) {
                try {
                    monitor.wait();
                } catch (InterruptedException e) {
                    return false;
                }
            }
            checkpointRequested = false;
            return !closed;
        }
    }

    /** A checkpoint committed: writers waiting no longer fail with an earlier one's error. */
    void checkpointSucceeded() {
        lastFailure = null;
    }

    /** A checkpoint failed: writers that began waiting before it fail with its error. */
    void checkpointFailed(StoreException e) {
        lastFailureAt = System.nanoTime();
        lastFailure = e;
        synchronized (monitor) {
            monitor.notifyAll();
        }
    }

    /** Writers waiting fail; the checkpoint thread returns. */
    void close() {
        synchronized (monitor) {
            closed = true;
            monitor.notifyAll();
        }
    }
}
