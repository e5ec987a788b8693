package vmfuse.journal;

import java.nio.ByteBuffer;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * What a {@link JournalDevice} asks of the store it lives in ({@link JournalStore}): so the
 * device knows the store only through these, and the store knows its devices, one way.
 */
interface DeviceStore {
    /** Where the device's blocks wait in memory. */
    BlockMemory blockMemory();

    /** Before a write: waits while memory is at its bound (a {@code Parking}); asks for a checkpoint when due. */
    void admit() throws StoreException;

    /** Held shared by every change of a device; a checkpoint takes it exclusive for its rotation. */
    ReentrantReadWriteLock opLock();

    /**
     * Held shared by every operation of a device, first (a {@code Parking} wait); the store takes
     * it exclusive while it opens its files again in place (JournalStore#reopen).
     */
    ReentrantReadWriteLock reopenLock();

    /** EIO unless the store's files are open (after a reopen that failed, they are not). Under {@link #reopenLock} shared. */
    void checkAttached() throws StoreException;

    /** A device changed: the next checkpoint has something to commit. */
    void touched();

    /** Blocks taken in memory. */
    void added(long n);

    /** Blocks given back. */
    void released(long n);

    /**
     * The device's size goes from {@code from} to {@code to}: the heap its index may take is
     * reserved (EFBIG, nothing reserved, past the store's limit) or given back ({@link IndexReserve}).
     */
    void resize(String device, long from, long to) throws StoreException;

    /** The redo log a FLUSH device's changes are appended to. */
    RedoLog redo();

    /** A FLUSH device appended a change to the redo log: its force may begin (see {@link GroupCommit}). */
    void logAppended();

    /** Until everything appended to the redo log so far is on disk (a flush: group commit). */
    void awaitLogSync() throws StoreException;

    /**
     * A checkpoint's buffer of {@link JournalDevice#DRAIN_BATCH} blocks on their way to the
     * blocks file (aligned, direct): the store's one, for its checkpoint's thread.
     */
    ByteBuffer drainBuffer();
}
