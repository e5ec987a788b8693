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
