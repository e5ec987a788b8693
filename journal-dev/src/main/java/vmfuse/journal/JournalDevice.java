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
    public synchronized void write(long offset, byte[] src, int srcOffset, int length) throws StoreException {
        RadixBlockStore.checkRange(offset, length);
        blocks.write(offset, src, srcOffset, length);
        if (offset + length > size) {
            size = offset + length;
            store.record(this);
        }
    }

    /** Makes a range read as zeros and frees its whole blocks (punch-hole, zero-range). */
    public void zero(long offset, long length) throws StoreException {
        RadixBlockStore.checkRange(offset, length);
        blocks.zero(offset, length);
    }

    /** Sets the size; shrinking frees every block past the new end. */
    public synchronized void truncate(long newSize) throws StoreException {
        RadixBlockStore.checkRange(0, newSize);
        if (newSize < size) {
            blocks.zero(newSize, RadixBlockStore.CAPACITY - newSize);
        }
        size = newSize;
        store.record(this);
    }

    /**
     * fsync/fdatasync. FLUSH: returns once everything written to the device is committed to
     * disk. CLOSE: returns at once (the contents persist at close, unmount or the next timer).
     */
    public void flush() throws StoreException {
        if (durability == Durability.FLUSH) {
            lastFlush = System.currentTimeMillis();
            store.record(this);
            store.awaitCommit();
        } else {
            lastFlush = System.currentTimeMillis();
        }
    }
}
