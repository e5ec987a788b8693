package vmfuse.journal;

/**
 * One journal device: a sparse block device of a fixed size whose blocks live in a
 * {@link RadixBlockStore}, with a durability mode. It behaves as a regular file of that size:
 * reads past the end return fewer bytes, writes past the end grow it, truncate sets it
 * (shrinking frees the blocks past the new end).
 */
public final class JournalDevice {
    private final JournalStore store;
    private final RadixBlockStore blocks;
    private final Durability durability;
    private final long created;
    private volatile String name;
    private volatile long size;
    private volatile long lastFlush;

    JournalDevice(JournalStore store, String name, RadixBlockStore blocks, long size, Durability durability,
            long created, long lastFlush) {
        this.store = store;
        this.name = name;
        this.blocks = blocks;
        this.size = size;
        this.durability = durability;
        this.created = created;
        this.lastFlush = lastFlush;
    }

    public String name() {
        return name;
    }

    public long size() {
        return size;
    }

    public Durability durability() {
        return durability;
    }

    public long created() {
        return created;
    }

    /** When the last flush returned (ms since the epoch), 0 if never. */
    public long lastFlush() {
        return lastFlush;
    }

    /** Bytes held in the store: whole blocks (an all-zero block is never held). */
    public long bytesStored() {
        return blocks.blocksStored() * RadixBlockStore.BLOCK_SIZE;
    }

    /** Heap held for this device: its radix tree nodes, which are all cached (4 KiB each). */
    public long memoryUsed() {
        return blocks.nodesStored() * RadixBlockStore.BLOCK_SIZE;
    }

    long blocksStored() {
        return blocks.blocksStored();
    }

    long rootRecid() {
        return blocks.rootRecid();
    }

    void renamed(String to) {
        name = to;
    }

    void destroy() {
        blocks.destroy();
    }

    /** Reads up to {@code length} bytes at {@code offset}; returns how many (0 at or past the end). */
    public int read(long offset, byte[] dst, int dstOffset, int length) throws StoreException {
        RadixBlockStore.checkRange(offset, length);
        long end = size;
        if (offset >= end) {
            return 0;
        }
        int n = (int) Math.min(length, end - offset);
        blocks.read(offset, dst, dstOffset, n);
        return n;
    }

    /** Writes at {@code offset}, growing the device if the write ends past it. */
    public void write(long offset, byte[] src, int srcOffset, int length) throws StoreException {
        RadixBlockStore.checkRange(offset, length);
        change(() -> {
            blocks.write(offset, src, srcOffset, length);
            log(RedoLog.WRITE, offset, 0, src, srcOffset, length);
            if (offset + length > size) {
                setSize(offset + length);
            }
        });
    }

    /** Makes a range read as zeros and frees its whole blocks (punch-hole, zero-range). */
    public void zero(long offset, long length) throws StoreException {
        RadixBlockStore.checkRange(offset, length);
        change(() -> {
            blocks.zero(offset, length);
            log(RedoLog.ZERO, offset, length, null, 0, 0);
        });
    }

    /** Sets the size; shrinking frees every block past the new end. */
    public void truncate(long newSize) throws StoreException {
        RadixBlockStore.checkRange(0, newSize);
        change(() -> {
            if (newSize < size) {
                blocks.zero(newSize, RadixBlockStore.CAPACITY - newSize);
                log(RedoLog.ZERO, newSize, RadixBlockStore.CAPACITY - newSize, null, 0, 0);
            }
            setSize(newSize);
        });
    }

    @FunctionalInterface
    private interface Change {
        void apply() throws StoreException;
    }

    /**
     * Runs a change of this device: the store's opLock shared (a checkpoint waits for it), then
     * this device's monitor, so its redo log records are in the order of its changes.
     */
    private void change(Change c) throws StoreException {
        store.opLock().readLock().lock();
        try {
            synchronized (this) {
                c.apply();
            }
        } finally {
            store.opLock().readLock().unlock();
        }
    }

    /** The size goes to the catalog at the next checkpoint, and to the redo log now. */
    private void setSize(long newSize) throws StoreException {
        size = newSize;
        log(RedoLog.SIZE, newSize, 0, null, 0, 0);
    }

    /** A FLUSH device's change goes to the redo log too, in the order of its changes. */
    private void log(byte type, long a, long b, byte[] data, int off, int len) throws StoreException {
        if (durability == Durability.FLUSH) {
            store.redo().append(type, blocks.rootRecid(), a, b, data, off, len);
        }
    }

    /** Applies a redo log record at recovery (not logged again). */
    void replay(byte type, long a, long b, byte[] data) throws StoreException {
        switch (type) {
            case RedoLog.WRITE -> blocks.write(a, data, 0, data.length);
            case RedoLog.ZERO -> blocks.zero(a, b);
            case RedoLog.SIZE -> size = a;
            default -> throw new StoreException(StoreException.EIO, "redo log: unknown record type " + type);
        }
    }

    /**
     * fsync/fdatasync. FLUSH: returns once everything written to the device is in the redo log on
     * disk. CLOSE: returns at once (the contents persist at close, unmount or the next timer).
     */
    public void flush() throws StoreException {
        lastFlush = System.currentTimeMillis();
        if (durability == Durability.FLUSH) {
            store.awaitLogSync();
        }
    }
}
