package vmfuse.journal;

import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicLong;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import vmfuse.durable.Parking;

/**
 * The flushes of a journal store's FLUSH devices, served by group commit, as in database logs,
 * with the force started as soon as records are appended: a flush needs every record appended
 * before it (counted by the log) on disk; if a force already covers them it waits for that one,
 * else the first flush to find no force running issues one for every record appended so far, and
 * flushes that come meanwhile wait, the first of them then serving them all with one fdatasync.
 *
 * <p>The forcer thread issues the same force as soon as a FLUSH device's write is appended, while
 * its writer is still on its way back to the guest: a guest's flush follows its writes (jbd2: the
 * journal blocks, then the preflush; the commit block, then the flush that stands in for its FUA),
 * and the round trip between the two, through the kernel and back, overlaps the fdatasync instead
 * of preceding it. A force never runs beside another of this log: one at a time, whoever starts it.
 *
 * <p>A failed fdatasync fails the flushes whose records it was to cover, and the log refuses
 * every force after it ({@link RedoLog#force}). A flush that finds every record appended so far
 * on disk already returns at once, forcing nothing. (A record appended before a rotation is in
 * the segment it left, which a force forces too until the store's commit holds it: RedoLog#force.)
 */
final class GroupCommit {
    private static final Logger log = LoggerFactory.getLogger(GroupCommit.class);

    private final RedoLog redo;
    private final Path file;
    private final AtomicLong syncs = new AtomicLong();
    private final AtomicLong skipped = new AtomicLong();
    /** Guards the state below; flushes and the forcer wait on it. */
    private final Object lock = new Object();
    private long synced; // records a force of this group commit had on disk when it returned
    private boolean syncing; // a force runs, for every record appended before it began
    private boolean kicked; // records were appended since the forcer last looked
    private long failedUpTo; // the records a failed force was for
    private StoreException syncFailure;
    private boolean closed;
    private final Thread forcer;

    /** The group commit of {@code redo}, the redo log of the store at {@code file} (for messages and its thread's name). */
    GroupCommit(RedoLog redo, Path file) {
        this.redo = redo;
        this.file = file;
        this.forcer = new Thread(this::forceWhenAppended, "vmfuse-log-forcer " + file.getFileName());
        forcer.setDaemon(true);
        forcer.start();
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
            // state (a guest's fsync with nothing new) forces nothing
            skipped.incrementAndGet();
            return;
        }
        long need = redo.appended(); // this flush's device appended its records before it asked
        synchronized (lock) {
            while (true) {
                if (closed) {
                    throw new StoreException(StoreException.EIO, "journal store " + file + " is closed");
                }
                if (need <= synced) { // a force that returned had them: a later one's failure is not theirs
                    return;
                }
                if (need <= failedUpTo) {
                    throw new StoreException(StoreException.EIO, "sync of the redo log of " + file + " failed: "
                            + syncFailure.getMessage(), syncFailure);
                }
                if (!syncing) {
                    syncing = true;
                    break;
                }
                wait(lock);
            }
        }
        StoreException failure = force();
        if (failure != null) {
            throw failure;
        }
    }

    /**
     * A force of every record appended so far, by the thread that set {@code syncing}; then the
     * flushes it covered are served (or failed) and the next may force. Returns its error, if any.
     */
    private StoreException force() {
        long upTo = redo.appended(); // at least what the flush (or the append) that started it needs
        StoreException failure = null;
        try {
            upTo = redo.force();
            syncs.incrementAndGet();
        } catch (StoreException e) {
            log.error("journal flush failed file={}: {}", file, e.getMessage());
            failure = e;
        } catch (RuntimeException | Error e) { // never leave `syncing` set: every flush after would wait forever
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
        return failure;
    }

    /** A FLUSH device's change was appended to the log: the forcer starts forcing it, unless a force runs. */
    void appended() {
        synchronized (lock) {
            if (!kicked) {
                kicked = true;
                lock.notifyAll();
            }
        }
    }

    /** The forcer: after each append, once no force runs, a force of whatever is not on disk yet. */
    private void forceWhenAppended() {
        while (true) {
            synchronized (lock) {
                while (!closed && (!kicked || syncing)) {
                    try {
                        lock.wait();
                    } catch (InterruptedException e) {
                        return;
                    }
                }
                if (closed) {
                    return;
                }
                kicked = false;
            }
            if (redo.allDurable()) {
                continue; // a flush's force covered it meanwhile
            }
            synchronized (lock) {
                if (syncing || closed) {
                    continue; // a flush's force began since: it covers what was appended before it
                }
                syncing = true;
            }
            force(); // a failure is logged and fails the flushes it was for, as a flush's own would
        }
    }

    private static void wait(Object lock) throws StoreException {
        try {
            lock.wait();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new StoreException(StoreException.EIO, "interrupted waiting for the redo log to sync");
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

    /**
     * Flushes waiting, and later ones, fail: the store is closed. The forcer ends, after the force
     * it may be running (waited for, up to 10 s), so that the log is not closed under it.
     */
    void close() {
        synchronized (lock) {
            closed = true;
            lock.notifyAll();
        }
        if (Thread.currentThread() != forcer) {
            try {
                forcer.join(10_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
