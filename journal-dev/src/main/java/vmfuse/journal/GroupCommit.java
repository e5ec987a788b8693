package vmfuse.journal;

import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicLong;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import vmfuse.durable.Parking;

/**
 * The flushes of a journal store's FLUSH devices, served by group commit with a leader, as in
 * database logs: a flush takes a ticket (its records are appended by then); the first flush to
 * come while no fdatasync of the redo log runs issues one itself, for every ticket taken before it
 * began; flushes that come meanwhile wait, and the first of them then serves them all with one
 * fdatasync. No thread hand-off for a lone flush. A failed fdatasync fails the tickets it was
 * for, and only those. (A record appended before a rotation is in the segment the rotation
 * forced; forcing the active segment covers the rest.) A flush that finds every record appended
 * so far on disk already returns at once, forcing nothing.
 */
final class GroupCommit {
    private static final Logger log = LoggerFactory.getLogger(GroupCommit.class);

    private final RedoLog redo;
    private final Path file;
    /** Flushes, numbered in the order they asked. */
    private final AtomicLong tickets = new AtomicLong();
    private final AtomicLong syncs = new AtomicLong();
    private final AtomicLong skipped = new AtomicLong();
    /** Guards the state below; flushes wait on it. */
    private final Object lock = new Object();
    private long synced; // every ticket up to this is on disk
    private boolean syncing; // a flush is forcing the log for every ticket taken before it began
    private long failedUpTo; // the tickets a failed fdatasync was for
    private StoreException syncFailure;
    private boolean closed;

    /** The group commit of {@code redo}, the redo log of the store at {@code file} (for messages). */
    GroupCommit(RedoLog redo, Path file) {
        this.redo = redo;
        this.file = file;
    }

    /**
     * Returns once everything appended to the redo log before the call is on disk. The wait is a
     * {@link Parking}: EIO at once if the caller's pool refuses it.
     */
    void await() throws StoreException {
        Parking.parked(() -> {
            awaitParked();
            return null;
        }, () -> new StoreException(StoreException.EIO, "journal flush refused: too many requests already wait on "
                + "the journal store (" + file + ") or on other subsystems"));
    }

    private void awaitParked() throws StoreException {
        if (redo.allDurable() && !closed()) {
            // nothing appended since the last fdatasync that returned: a second flush of the same
            // state (a flush after a FUA write, a guest's fsync with nothing new) forces nothing
            skipped.incrementAndGet();
            return;
        }
        long ticket = tickets.incrementAndGet();
        synchronized (lock) {
            while (true) {
                if (closed) {
                    throw new StoreException(StoreException.EIO, "journal store " + file + " is closed");
                }
                if (ticket <= failedUpTo) {
                    throw new StoreException(StoreException.EIO, "sync of the redo log of " + file + " failed: "
                            + syncFailure.getMessage(), syncFailure);
                }
                if (ticket <= synced) {
                    return;
                }
                if (!syncing) {
                    syncing = true;
                    break;
                }
                try {
                    lock.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new StoreException(StoreException.EIO, "interrupted waiting for the redo log to sync");
                }
            }
        }
        long upTo = tickets.get(); // every flush up to here appended its records before this force
        StoreException failure = null;
        try {
            redo.force();
            syncs.incrementAndGet();
        } catch (StoreException e) {
            log.error("journal flush failed file={}: {}", file, e.getMessage());
            failure = e;
        } catch (RuntimeException e) { // never leave `syncing` set: every flush after would wait forever
            log.error("journal flush failed file={}", file, e);
            failure = new StoreException(StoreException.EIO, "sync of the redo log failed: " + e, e);
        }
        synchronized (lock) {
            syncing = false;
            if (failure == null) {
                synced = Math.max(synced, upTo);
            } else {
                failedUpTo = Math.max(failedUpTo, upTo);
                syncFailure = failure;
            }
            lock.notifyAll();
        }
        if (failure != null) {
            throw failure;
        }
    }

    /** fdatasyncs of the redo log so far; each served every flush waiting. */
    long syncs() {
        return syncs.get();
    }

    /** Flushes that found everything on disk already, and forced nothing. */
    long skipped() {
        return skipped.get();
    }

    private boolean closed() {
        synchronized (lock) {
            return closed;
        }
    }

    /** Flushes waiting, and later ones, fail: the store is closed. */
    void close() {
        synchronized (lock) {
            closed = true;
            lock.notifyAll();
        }
    }
}
