package vmfuse.journal;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.locks.ReentrantReadWriteLock;

import org.mapdb.Serializer;
import org.mapdb.Store;

import vmfuse.durable.Disk;

/*
 * A sparse address space of 2^63 bytes in 4 KiB blocks: its index in MapDB's record store, its
 * blocks in the store's BlockFile.
 *
 * A radix tree of fixed height 6 over the block number (the byte offset >> 12, 51 bits):
 *
 *     block number    | 6 bits | 9 bits | 9 bits | 9 bits | 9 bits | 9 bits |
 *     tree level          0        1        2        3        4        5
 *
 *     root node ──► level-1 node ──► ... ──► level-5 node ──► SLOT | slot (a 4 KiB slot of the BlockFile)
 *        │                                        ├──► 0 (block never written: reads as zeros)
 *        └──► 0 (nothing stored below)            └──► data record (format 2: a 4096-byte MapDB record)
 *
 * A node is one MapDB record of 512 longs (4 KiB, the size of a block); 0 means "nothing
 * below". The root always exists; any other node exists only while something below it is
 * stored, and a block only while it holds a non-zero byte. A write of zeros, a punch or a
 * zero-range drops the block, and a node left with no children is deleted with it: an empty
 * store is one record, and the store never holds an all-zero block.
 *
 * Blocks are written copy on write into slots of the store's BlockFile (which says why); a
 * store of format 2 kept them as MapDB records, which are still read, and are deleted as their
 * blocks are written again. Without a BlockFile (tests) every block is a record.
 *
 * Why this shape: 512 longs fill a 4 KiB record, the size of a block; six levels of 9 bits (the
 * top one uses 6) cover 2^63 bytes with no resizing; a lookup walks six nodes, and since there
 * is one node per 512 blocks (0.2% of the data) every node is cached in memory, so a read costs
 * one read of a slot (a format-2 block: one MapDB record access). MapDB's raw record store
 * (put/get/update/delete by record id) is used rather than its maps: FACTS.md measured it at
 * under 1 µs per 4 KiB record, against 8-75 µs for BTreeMap and HTreeMap.
 *
 * A changed node is written to the store by flushNodes(), not at each change: a batch of block
 * writes under one node (a checkpoint writes thousands) updates it once. Slots are written at
 * once. The owner calls flushNodes() before it commits the MapDB store.
 *
 * Thread-safe: reads share a lock, changes take it exclusively.
 */
public final class RadixBlockStore {
    public static final int BLOCK_SIZE = BlockWalk.BLOCK;
    /** Bytes addressable: offsets 0 .. 2^63 - 1. */
    public static final long CAPACITY = BlockWalk.CAPACITY;

    static final int FANOUT = 512;
    static final int LEVELS = 6;
    private static final int BLOCK_SHIFT = 12;
    private static final int LEVEL_BITS = 9;
    private static final byte[] ZEROS = new byte[BLOCK_SIZE];
    /** A leaf that is a slot of the BlockFile, not a MapDB record id (ids are far below 2^62). */
    static final long SLOT = 1L << 62;

    private final Store store;
    /** Where blocks are written; null: as MapDB records (tests of format 2). */
    private final BlockFile file;
    private final long root;
    /** Every node of this tree, by record id. Guarded by lock. */
    private final Map<Long, long[]> nodes = new HashMap<>();
    /** Nodes changed since {@link #flushNodes()} wrote them to the store. Guarded by lock. */
    private final Set<Long> changedNodes = new HashSet<>();
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private long blocks;
    /** A block on its way to a slot, one at a time (a partial write's, a replayed one's). Guarded by lock. */
    private ByteBuffer one;

    private RadixBlockStore(Store store, BlockFile file, long root) {
        this.store = store;
        this.file = file;
        this.root = root;
    }

    /** A new, empty address space in {@code store}, its blocks as records; keep {@link #rootRecid()} to open it again. */
    public static RadixBlockStore create(Store store) {
        return create(store, null);
    }

    /** A new, empty address space in {@code store}, its blocks in {@code file}'s slots. */
    static RadixBlockStore create(Store store, BlockFile file) {
        long root = store.put(new long[FANOUT], Serializer.LONG_ARRAY);
        RadixBlockStore s = new RadixBlockStore(store, file, root);
        s.nodes.put(root, new long[FANOUT]);
        return s;
    }

    /** Opens the address space rooted at {@code root}, its blocks as records, loading and checking every node. */
    public static RadixBlockStore open(Store store, long root) throws StoreException {
        return open(store, root, null);
    }

    /**
     * Opens the address space rooted at {@code root}, loading and checking every node, and marking
     * the slots of {@code file} its blocks are in as used.
     */
    static RadixBlockStore open(Store store, long root, BlockFile file) throws StoreException {
        RadixBlockStore s = new RadixBlockStore(store, file, root);
        s.blocks = s.load(root, 0);
        return s;
    }

    private long load(long recid, int level) throws StoreException {
        long[] node;
        try {
            node = store.get(recid, Serializer.LONG_ARRAY);
        } catch (RuntimeException e) {
            throw new StoreException(StoreException.EIO, "corrupt block store: node record " + recid
                    + " at level " + level + " cannot be read: " + e, e);
        }
        if (node == null || node.length != FANOUT) {
            throw new StoreException(StoreException.EIO, "corrupt block store: node record " + recid
                    + " at level " + level + " is " + (node == null ? "missing" : node.length + " ids, not " + FANOUT));
        }
        nodes.put(recid, node);
        long count = 0;
        for (long child : node) {
            if (child == 0) {
                continue;
            }
            if (level < LEVELS - 1) {
                count += load(child, level + 1);
                continue;
            }
            if ((child & SLOT) != 0 && (file == null || !file.use(child & ~SLOT))) {
                throw new StoreException(StoreException.EIO, "corrupt block store: leaf " + Long.toHexString(child)
                        + " in node record " + recid + (file == null ? " is a slot, and there is no blocks file"
                        : " is a slot another block is in, or no slot"));
            }
            count++;
        }
        return count;
    }

    public long rootRecid() {
        return root;
    }

    /** Blocks holding data (each a 4 KiB slot or record). */
    public long blocksStored() {
        lock.readLock().lock();
        try {
            return blocks;
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Tree nodes in the store, the root included. */
    /**
     * Forgets every node held in memory, changed or not: for a device lost by a reopen, whose
     * files are closed and whose nodes nothing will read or write again, so that an open handle
     * holding its object does not hold that heap too (its index reserve went to the object that
     * serves its name now).
     */
    void dropCache() {
        lock.writeLock().lock();
        try {
            nodes.clear();
            changedNodes.clear();
        } finally {
            lock.writeLock().unlock();
        }
    }

    public long nodesStored() {
        lock.readLock().lock();
        try {
            return nodes.size();
        } finally {
            lock.readLock().unlock();
        }
    }

    static void checkRange(long offset, long length) throws StoreException {
        BlockWalk.checkRange(offset, length);
    }

    private static int slot(long block, int level) {
        int shift = LEVEL_BITS * (LEVELS - 1 - level);
        return (int) ((block >>> shift) & (FANOUT - 1));
    }

    /** The leaf of a block (SLOT | its slot, or its data record), or 0. */
    private long find(long block) {
        long[] node = nodes.get(root);
        for (int level = 0; level < LEVELS - 1; level++) {
            long child = node[slot(block, level)];
            if (child == 0) {
                return 0;
            }
            node = nodes.get(child);
        }
        return node[slot(block, LEVELS - 1)];
    }

    /** Reads {@code length} bytes at {@code offset} into {@code dst}; unwritten bytes read as zeros. */
    public void read(long offset, byte[] dst, int dstOffset, int length) throws StoreException {
        checkRange(offset, length);
        lock.readLock().lock();
        try {
            BlockWalk.each(offset, length, (block, in, done, n) -> {
                long recid = find(block);
                if (recid == 0) {
                    Arrays.fill(dst, dstOffset + done, dstOffset + done + n, (byte) 0);
                } else {
                    System.arraycopy(data(recid, block), in, dst, dstOffset + done, n);
                }
            });
        } finally {
            lock.readLock().unlock();
        }
    }

    private byte[] data(long recid, long block) throws StoreException {
        if ((recid & SLOT) != 0) {
            byte[] b = new byte[BLOCK_SIZE];
            try {
                file.read(recid & ~SLOT, ByteBuffer.wrap(b));
            } catch (IOException e) {
                throw new StoreException(StoreException.errno(e), "block " + block + " (slot " + (recid & ~SLOT)
                        + ") cannot be read: " + e.getMessage(), e);
            }
            return b;
        }
        byte[] b;
        try {
            b = store.get(recid, Serializer.BYTE_ARRAY_NOSIZE);
        } catch (RuntimeException e) {
            throw new StoreException(StoreException.EIO, "corrupt block store: block " + block + " (record " + recid
                    + ") cannot be read: " + e, e);
        }
        if (b == null || b.length != BLOCK_SIZE) {
            throw new StoreException(StoreException.EIO, "corrupt block store: block " + block + " (record " + recid
                    + ") is " + (b == null ? "missing" : b.length + " bytes"));
        }
        return b;
    }

    /** Writes {@code length} bytes at {@code offset}; blocks that end up all zeros are not stored. */
    public void write(long offset, byte[] src, int srcOffset, int length) throws StoreException {
        checkRange(offset, length);
        lock.writeLock().lock();
        try {
            BlockWalk.each(offset, length, (block, in, done, n) -> {
                byte[] b;
                if (n == BLOCK_SIZE) {
                    b = Arrays.copyOfRange(src, srcOffset + done, srcOffset + done + n);
                } else {
                    long recid = find(block);
                    b = recid == 0 ? new byte[BLOCK_SIZE] : data(recid, block);
                    System.arraycopy(src, srcOffset + done, b, in, n);
                }
                store(block, b);
            });
        } finally {
            lock.writeLock().unlock();
        }
    }

    /**
     * Makes {@code length} bytes at {@code offset} read as zeros (punch-hole, zero-range, a
     * shrinking truncate). Whole blocks and whole subtrees in the range are deleted without being
     * read; the partial blocks at either end are rewritten, and deleted if they become all zeros.
     */
    public void zero(long offset, long length) throws StoreException {
        checkRange(offset, length);
        lock.writeLock().lock();
        try {
            BlockWalk.zero(offset, length, new BlockWalk.Zeroing() {
                @Override
                public void part(long block, int in, int n) throws StoreException {
                    zeroPart(block, in, n);
                }

                @Override
                public void whole(long from, long to) {
                    deleteRange(root, 0, 0, from, to);
                }
            });
        } finally {
            lock.writeLock().unlock();
        }
    }

    private void zeroPart(long block, int in, int n) throws StoreException {
        long recid = find(block);
        if (recid == 0) {
            return;
        }
        byte[] b = data(recid, block);
        Arrays.fill(b, in, in + n, (byte) 0);
        store(block, b);
    }

    /**
     * Deletes every block in [from, to) below {@code recid}, a node at {@code level} whose first
     * block is {@code base}; returns true if the node is left empty (and, unless it is the root,
     * has been deleted).
     */
    private boolean deleteRange(long recid, int level, long base, long from, long to) {
        long[] node = nodes.get(recid);
        int shift = LEVEL_BITS * (LEVELS - 1 - level);
        long span = 1L << shift; // blocks under one slot
        int first = from <= base ? 0 : (int) ((from - base) >>> shift);
        long lastExcl = (to - base + span - 1) >>> shift;
        int last = (int) Math.min(FANOUT, lastExcl);
        boolean changed = false;
        for (int i = first; i < last; i++) {
            long child = node[i];
            if (child == 0) {
                continue;
            }
            long childBase = base + ((long) i << shift);
            if (level == LEVELS - 1) {
                release(child);
                blocks--;
                node[i] = 0;
                changed = true;
            } else if (deleteRange(child, level + 1, childBase, from, to)) {
                node[i] = 0;
                changed = true;
            }
        }
        boolean empty = isEmpty(node);
        if (empty && recid != root) {
            dropNode(recid);
        } else if (changed) {
            changedNodes.add(recid);
        }
        return empty;
    }

    /**
     * A leaf no longer pointed to: a slot is given back to the BlockFile (free once a commit without
     * it is durable); a data record is deleted, zeroed first: its space in the file then holds
     * zeros, which the store's volume punches out of the file where whole pages are (so freed
     * blocks leave the disk).
     */
    private void release(long leaf) {
        if ((leaf & SLOT) != 0) {
            file.drop(leaf & ~SLOT);
            return;
        }
        store.update(leaf, ZEROS, Serializer.BYTE_ARRAY_NOSIZE);
        store.delete(leaf, Serializer.BYTE_ARRAY_NOSIZE);
    }

    private void dropNode(long recid) {
        nodes.remove(recid);
        changedNodes.remove(recid);
        store.delete(recid, Serializer.LONG_ARRAY);
    }

    /** Writes every node changed since the last call to the store (before the store commits). */
    public void flushNodes() {
        lock.writeLock().lock();
        try {
            for (long recid : changedNodes) {
                store.update(recid, nodes.get(recid), Serializer.LONG_ARRAY);
            }
            changedNodes.clear();
        } finally {
            lock.writeLock().unlock();
        }
    }

    /** A copy of a block's contents, or null if it holds no data (reads as zeros). */
    public byte[] readBlock(long block) throws StoreException {
        lock.readLock().lock();
        try {
            long recid = find(block);
            return recid == 0 ? null : data(recid, block);
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Blocks holding data among blocks [from, to). */
    public long countRange(long from, long to) {
        lock.readLock().lock();
        try {
            return from < to ? countRange(root, 0, 0, from, to) : 0;
        } finally {
            lock.readLock().unlock();
        }
    }

    private long countRange(long recid, int level, long base, long from, long to) {
        long[] node = nodes.get(recid);
        int shift = LEVEL_BITS * (LEVELS - 1 - level);
        long span = 1L << shift;
        int first = from <= base ? 0 : (int) ((from - base) >>> shift);
        int last = (int) Math.min(FANOUT, (to - base + span - 1) >>> shift);
        long n = 0;
        for (int i = first; i < last; i++) {
            long child = node[i];
            if (child != 0) {
                n += level == LEVELS - 1 ? 1 : countRange(child, level + 1, base + ((long) i << shift), from, to);
            }
        }
        return n;
    }

    /** True if the block holds data in the store. */
    public boolean contains(long block) {
        lock.readLock().lock();
        try {
            return find(block) != 0;
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Sets a whole block ({@code b} is 4096 bytes, copied); an all-zero block is deleted. */
    public void writeBlock(long block, byte[] b) throws StoreException {
        lock.writeLock().lock();
        try {
            store(block, b);
        } finally {
            lock.writeLock().unlock();
        }
    }

    /**
     * Sets {@code count} whole blocks, numbers {@code numbers[0..count)}, from {@code data} (their
     * bytes one after the other from position 0; an aligned direct buffer, see
     * Disk.alignedBuffer, which this may change): {@link #stage} then {@link #apply}, under the
     * write lock. A failed write changes no block.
     */
    void writeBlocks(long[] numbers, ByteBuffer data, int count) throws StoreException {
        lock.writeLock().lock();
        try {
            apply(stage(numbers, data, count));
        } finally {
            lock.writeLock().unlock();
        }
    }

    /** Blocks written into slots that nothing points at yet, and blocks of zeros: see {@link #stage}. */
    static final class Staged {
        private final long[] numbers;
        private final int[] slots; // per number: its slot, or -1 for zeros; null: records (no BlockFile)
        private final byte[][] records;

        private Staged(long[] numbers, int[] slots, byte[][] records) {
            this.numbers = numbers;
            this.slots = slots;
            this.records = records;
        }
    }

    /**
     * The first half of setting {@code count} whole blocks (see {@link #writeBlocks}): those
     * holding data are written into new slots of the BlockFile (in one write per free run of
     * slots), which no reader can reach until {@link #apply} points the tree at them. So this
     * takes no lock: a checkpoint writes while the device's readers and writers go on. A failed
     * write leaves nothing to apply (its slots are free again). Without a BlockFile, the bytes
     * are copied for apply to store as records.
     */
    Staged stage(long[] numbers, ByteBuffer data, int count) throws StoreException {
        long[] all = Arrays.copyOf(numbers, count);
        if (file == null) {
            byte[][] records = new byte[count][];
            for (int i = 0; i < count; i++) {
                records[i] = new byte[BLOCK_SIZE];
                data.get(i * BLOCK_SIZE, records[i]);
            }
            return new Staged(all, null, records);
        }
        // the blocks holding data, moved to the front (in order: a block only moves down)
        int[] slots = new int[count];
        int[] at = new int[count];
        int m = 0;
        for (int i = 0; i < count; i++) {
            if (isZero(data, i)) {
                slots[i] = -1;
                continue;
            }
            if (m != i) {
                data.put(m * BLOCK_SIZE, data, i * BLOCK_SIZE, BLOCK_SIZE);
            }
            at[m++] = i;
        }
        if (m > 0) {
            int[] written;
            try {
                written = file.write(data.duplicate().position(0), m);
            } catch (IOException e) {
                throw new StoreException(StoreException.errno(e), "blocks file " + file.path() + ": " + e.getMessage(), e);
            }
            for (int k = 0; k < m; k++) {
                slots[at[k]] = written[k];
            }
        }
        return new Staged(all, slots, null);
    }

    /** The second half: points the tree at what {@link #stage} wrote (and drops blocks of zeros). */
    void apply(Staged staged) {
        lock.writeLock().lock();
        try {
            for (int i = 0; i < staged.numbers.length; i++) {
                long block = staged.numbers[i];
                if (staged.records != null) {
                    storeRecord(block, staged.records[i]);
                } else if (staged.slots[i] < 0) {
                    clear(block);
                } else {
                    long old = point(block, SLOT | staged.slots[i]);
                    if (old != 0) {
                        release(old);
                    }
                }
            }
        } finally {
            lock.writeLock().unlock();
        }
    }

    private static final ByteBuffer ZERO_BUFFER = ByteBuffer.wrap(ZEROS).asReadOnlyBuffer();

    private static boolean isZero(ByteBuffer data, int i) {
        return data.slice(i * BLOCK_SIZE, BLOCK_SIZE).mismatch(ZERO_BUFFER) == -1;
    }

    private static boolean isEmpty(long[] node) {
        for (long c : node) {
            if (c != 0) {
                return false;
            }
        }
        return true;
    }

    /**
     * Stores a block's new contents ({@code b}, 4096 bytes): in a slot (or a record, without a
     * BlockFile) if it holds any non-zero byte, nothing otherwise. Under the write lock.
     */
    private void store(long block, byte[] b) throws StoreException {
        if (file == null) {
            storeRecord(block, b);
            return;
        }
        if (one == null) {
            one = Disk.alignedBuffer(BLOCK_SIZE);
        }
        one.put(0, b);
        writeBlocks(new long[] {block}, one, 1);
    }

    /** A block holding data as a record (no BlockFile: tests of format 2). Under the write lock. */
    private void storeRecord(long block, byte[] b) {
        if (Arrays.equals(b, ZEROS)) {
            clear(block);
            return;
        }
        long old = find(block);
        if (old != 0 && (old & SLOT) == 0) {
            store.update(old, b, Serializer.BYTE_ARRAY_NOSIZE); // format 2's record, in place
            return;
        }
        old = point(block, store.put(b, Serializer.BYTE_ARRAY_NOSIZE));
        if (old != 0) {
            release(old);
        }
    }

    /**
     * Points {@code block}'s leaf at {@code leaf} (non-zero), making the nodes on its path as
     * needed; returns the leaf it replaced, or 0. Under the write lock.
     */
    private long point(long block, long leaf) {
        long[] node = nodes.get(root);
        long parent = root;
        for (int level = 0; level < LEVELS - 1; level++) {
            int i = slot(block, level);
            long child = node[i];
            if (child == 0) {
                long[] fresh = new long[FANOUT];
                child = store.put(fresh, Serializer.LONG_ARRAY);
                nodes.put(child, fresh);
                node[i] = child;
                changedNodes.add(parent);
            }
            parent = child;
            node = nodes.get(child);
        }
        int i = slot(block, LEVELS - 1);
        long old = node[i];
        node[i] = leaf;
        changedNodes.add(parent);
        if (old == 0) {
            blocks++;
        }
        return old;
    }

    /** Drops a block (it reads as zeros), and the nodes it leaves empty; the root stays. Under the write lock. */
    private void clear(long block) {
        long[] path = new long[LEVELS];
        path[0] = root;
        long[] node = nodes.get(root);
        for (int level = 0; level < LEVELS - 1; level++) {
            long child = node[slot(block, level)];
            if (child == 0) {
                return; // nothing stored there
            }
            path[level + 1] = child;
            node = nodes.get(child);
        }
        int i = slot(block, LEVELS - 1);
        long leaf = node[i];
        if (leaf == 0) {
            return;
        }
        release(leaf);
        blocks--;
        node[i] = 0;
        // drop nodes left empty, bottom up; the root stays
        for (int level = LEVELS - 1; level >= 0; level--) {
            long[] n = nodes.get(path[level]);
            if (level > 0 && isEmpty(n)) {
                dropNode(path[level]);
                nodes.get(path[level - 1])[slot(block, level - 1)] = 0;
            } else {
                changedNodes.add(path[level]);
                break;
            }
        }
    }

    /** Deletes every record of this address space, the root included. The store is unusable after. */
    public void destroy() {
        lock.writeLock().lock();
        try {
            deleteRange(root, 0, 0, 0, (CAPACITY >>> BLOCK_SHIFT) + 1);
            store.delete(root, Serializer.LONG_ARRAY);
            nodes.clear();
            changedNodes.clear();
            blocks = 0;
        } finally {
            lock.writeLock().unlock();
        }
    }
}
