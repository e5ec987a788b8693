package vmfuse.journal;

import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.LongAdder;
import java.util.concurrent.locks.ReentrantLock;

import org.eclipse.collections.impl.map.mutable.primitive.LongIntHashMap;

import vmfuse.durable.Parking;

/**
 * One journal device: a sparse block device of a fixed size whose blocks live in a
 * {@link RadixBlockStore}, with a durability mode. It behaves as a regular file of that size:
 * reads past the end return fewer bytes, writes past the end grow it, truncate sets it
 * (shrinking frees the blocks past the new end).
 *
 * <p>Writes go to memory: {@code dirty} blocks (slots of the store's {@link BlockMemory}, off
 * the Java heap), and {@code zeros}, the block ranges punched or zeroed (a whole-block zero
 * never touches the store at once). A checkpoint freezes them ({@code frozen},
 * {@code frozenZeros}) at the moment it rotates the redo log and moves them into the store:
 * zeros first, then blocks, since every block still dirty was written after every
 * zero that covered it. So the store's commit holds exactly what was logged before the rotation,
 * and nothing logged after it. A read looks in the same order as time runs backwards: dirty,
 * zeros, frozen, frozen zeros, the store.
 */
public final class JournalDevice {
    private static final int BLOCK = RadixBlockStore.BLOCK_SIZE;
    private static final int SHIFT = 12;

    private final DeviceStore store;
    private final BlockMemory memory;
    /** Replaced only by {@link #reattach}, under the store's reopenLock exclusive and this device's monitor. */
    private RadixBlockStore blocks;
    private final Durability durability;
    private final long created;
    private volatile String name;
    private volatile long size;
    private volatile long lastFlush;
    private volatile boolean deleted;
    /** Why every operation fails: the store was opened again and this device's changes were not in it (see {@link #lose}). */
    private volatile String lost;

    // guarded by this; a block's value is its slot in `memory`. Hash maps of primitive block
    // numbers: a write puts every block it covers, and TreeMaps of boxed Longs were over a third
    // of the writing thread's samples (JFR, 128 KiB close-mode writes in process); the drain
    // sorts the frozen blocks once
    private LongIntHashMap dirty = new LongIntHashMap();
    private final BlockRanges zeros = new BlockRanges();
    private LongIntHashMap frozen = new LongIntHashMap();
    /** No slot: a block the map does not hold (slots are 0 and up). */
    private static final int NONE = -1;
    /**
     * Blocks a drain moves into the store at a time: one write of 1 MiB to the blocks file (on
     * this machine's disk, O_DIRECT: 1.5 GB/s in writes of 1 MiB, 0.65 in writes of 128 KiB).
     */
    static final int DRAIN_BATCH = 256;
    private final BlockRanges frozenZeros = new BlockRanges();
    /** The size at the last freeze: what the checkpoint records. */
    private long frozenSize;
    /** Bumped by every change; {@link #blocksStored()} is recounted only when it moved. */
    private long version;
    private long countedVersion = -1;
    private long counted;
    /** Changes made; at the last freeze; in the last checkpoint that committed (see {@link #changedSinceCommit}). */
    private long changes;
    private long frozenChanges;
    private long committedChanges;
    /** Slots taken for the change being made (see reserve). */
    private int[] reserved = new int[0];
    private int reservedCount;

    /**
     * Who may open the device, as its file in the mount shows it: the owner, the group, the
     * permission bits (07777). A device is made root's, 0600; libvirt gives it to the user QEMU
     * runs as (its dynamic ownership), an operator with chown.
     */
    public record Owner(int uid, int gid, int mode) {
        public static final Owner ROOT = new Owner(0, 0, 0600);

        public Owner {
            mode &= 07777;
        }
    }

    private volatile Owner owner;

    /**
     * Changes and the checkpoint's drain take turns at this device's monitor, first come first
     * served. The drain's batches follow one another within microseconds, and the monitor, which
     * is not fair, went back to the drain before a writer woke from its wait: writes waited out
     * whole drains, up to 29 ms (jbd2-like commits through the NBD door, measured with JFR).
     */
    private final ReentrantLock turns = new ReentrantLock(true);

    JournalDevice(DeviceStore store, String name, RadixBlockStore blocks, long size, Durability durability,
            long created, long lastFlush, Owner owner) {
        this.owner = owner;
        this.store = store;
        this.memory = store.blockMemory();
        this.name = name;
        this.blocks = blocks;
        this.size = size;
        this.durability = durability;
        this.created = created;
        this.lastFlush = lastFlush;
        this.frozenSize = size;
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

    public Owner owner() {
        return owner;
    }

    /** Under the store's opLock, exclusive: the next checkpoint records it (JournalStore.setOwner). */
    void owner(Owner o) {
        owner = o;
    }

    /** When the last flush returned (ms since the epoch), 0 if never. */
    public long lastFlush() {
        return lastFlush;
    }

    /** Bytes held: whole blocks, in memory or in the store (an all-zero block is never stored). */
    public long bytesStored() {
        return blocksStored() * BLOCK;
    }

    /** Memory held for this device: its blocks waiting in memory and its radix tree nodes (all cached). */
    public synchronized long memoryUsed() {
        return (dirty.size() + frozen.size() + blocks.nodesStored()) * (long) BLOCK;
    }

    /** Blocks that read as anything but zeros (a block written with zeros and not yet checkpointed counts). */
    synchronized long blocksStored() {
        if (countedVersion == version) {
            return counted;
        }
        BlockRanges allZeros = new BlockRanges();
        allZeros.addAll(zeros);
        allZeros.addAll(frozenZeros);
        long n = blocks.blocksStored();
        for (BlockRanges.Span r : allZeros.list()) {
            n -= blocks.countRange(r.from(), r.to());
        }
        for (long b : dirty.keySet().toArray()) {
            n += 1 - (!allZeros.contains(b) && blocks.contains(b) ? 1 : 0);
        }
        for (long b : frozen.keySet().toArray()) {
            if (!dirty.containsKey(b) && !zeros.contains(b)) {
                n += 1 - (!allZeros.contains(b) && blocks.contains(b) ? 1 : 0);
            }
        }
        counted = n;
        countedVersion = version;
        return n;
    }

    long rootRecid() {
        return blocks.rootRecid();
    }

    long frozenSize() {
        return frozenSize;
    }

    void renamed(String to) {
        name = to;
    }

    /**
     * Out of the namespace while its delete (or a rename over it) commits: every change fails
     * (EIO), and no checkpoint freezes or drains it. {@link #unhide} if that commit fails.
     */
    void hide() {
        deleted = true;
    }

    void unhide() {
        deleted = false;
    }

    /** Drops every block, in memory and in the store (the device is deleted, and that is committed). */
    synchronized void destroy() {
        deleted = true;
        try {
            store.resize(name, size, 0);
        } catch (StoreException e) {
            throw new IllegalStateException(e); // a shrink gives back: it never fails
        }
        dropMemory();
        blocks.destroy();
    }

    /** Reads up to {@code length} bytes at {@code offset}; returns how many (0 at or past the end). */
    public int read(long offset, byte[] dst, int dstOffset, int length) throws StoreException {
        RadixBlockStore.checkRange(offset, length);
        enter();
        try {
            synchronized (this) {
                checkLive();
                long end = size;
                if (offset >= end) {
                    return 0;
                }
                int n = (int) Math.min(length, end - offset);
                BlockWalk.each(offset, n, (block, in, done, k) -> copyOut(block, in, dst, dstOffset + done, k));
                return n;
            }
        } finally {
            exit();
        }
    }

    /**
     * EIO once the device is deleted (or while its delete commits), as for a write: a handle
     * opened before finds its blocks gone (its store was a NullPointerException, found by a review).
     * EIO too once it is lost (see {@link #lose}).
     */
    private void checkLive() throws StoreException {
        if (deleted) {
            throw new StoreException(StoreException.EIO, "journal device " + name + " was deleted");
        }
        String why = lost;
        if (why != null) {
            throw new StoreException(StoreException.EIO, why);
        }
    }

    /**
     * Every operation of a device holds the store's reopenLock shared (while the store opens its
     * files again, a {@link Parking} wait), and finds the store's files open (EIO after a reopen
     * that failed). Then {@link #exit}.
     */
    private void enter() throws StoreException {
        if (!Parking.lock(store.reopenLock().readLock())) {
            throw new StoreException(StoreException.EIO, "journal device " + name + ": the store is being opened "
                    + "again and too many requests already wait on it or on other subsystems");
        }
        try {
            store.checkAttached();
        } catch (StoreException | RuntimeException e) {
            exit();
            throw e;
        }
    }

    private void exit() {
        store.reopenLock().readLock().unlock();
    }

    /**
     * The store was opened again in place (JournalStore#reopen) without this device's changes
     * since its last commit (a close-mode device's, which only memory held): from now on every
     * operation fails with {@code why}, so no guest goes on over contents that went back in time.
     * The device's name is served again by another object, as the last commit left it; what
     * memory held of this one is given back. Under the store's reopenLock exclusive.
     */
    synchronized void lose(String why) {
        lost = why;
        dropMemory();
        blocks.dropCache(); // its tree's nodes, outside the index reserve from now on
    }

    /** Gives back every block and zero range memory holds of this device. Holding this. */
    private void dropMemory() {
        store.released(dirty.size() + frozen.size());
        give(dirty);
        give(frozen);
        zeros.clear();
        frozenZeros.clear();
        chargeZeroRanges();
    }

    boolean lost() {
        return lost != null;
    }

    /** Whether a change was made since the last checkpoint that committed (or, for a new device, since its creation). */
    synchronized boolean changedSinceCommit() {
        return changes != committedChanges;
    }

    /** The checkpoint that froze this device committed. */
    synchronized void committed() {
        committedChanges = frozenChanges;
    }

    /**
     * The store opened its files again in place: this device is now what they hold, {@code blocks}
     * (the redo log is replayed into it next), {@code size}, {@code owner}; what memory held of it
     * is given back. Under the store's reopenLock exclusive.
     */
    synchronized void reattach(RadixBlockStore blocks, long size, Owner owner) {
        dropMemory();
        this.blocks = blocks;
        this.size = size;
        this.frozenSize = size;
        this.owner = owner;
        version++;
        changes = 0;
        frozenChanges = 0;
        committedChanges = 0;
    }

    /** The slot holding what a block reads as now, if memory holds it, else NONE. Holding this. */
    private int inMemory(long block) {
        int slot = dirty.getIfAbsent(block, NONE);
        if (slot != NONE || zeros.contains(block)) {
            return slot;
        }
        return frozen.getIfAbsent(block, NONE); // frozen blocks were written after the frozen zeros that cover them
    }

    /** What a block memory does not hold reads as: its stored bytes, or null for zeros. Holding this. */
    private byte[] fromStore(long block) throws StoreException {
        return zeros.contains(block) || frozenZeros.contains(block) ? null : blocks.readBlock(block);
    }

    /** Whether a block reads as zeros without looking at its bytes: zeroed since, or never stored. Holding this. */
    private boolean knownZero(long block) {
        return inMemory(block) == NONE
                && (zeros.contains(block) || frozenZeros.contains(block) || !blocks.contains(block));
    }

    /**
     * Whether the blocks from {@code block} on hold data, as one run of up to {@code max} blocks:
     * {@code n > 0} if the next n blocks all may (written, or stored), {@code -n} if they all read
     * as zeros without holding anything (zeroed since, or never written). The caller asks again
     * from the run's end; past the device's end the answer is a run of zeros.
     */
    public long dataRun(long block, long max) throws StoreException {
        if (max <= 0) {
            throw new IllegalArgumentException("max " + max);
        }
        enter();
        try {
            synchronized (this) {
                checkLive();
                boolean zero = knownZero(block);
                long n = 1;
                while (n < max && knownZero(block + n) == zero) {
                    n++;
                }
                return zero ? -n : n;
            }
        } finally {
            exit();
        }
    }

    /** Copies {@code n} bytes of a block, from {@code in}, as it reads now. Holding this. */
    private void copyOut(long block, int in, byte[] dst, int off, int n) throws StoreException {
        int slot = inMemory(block);
        byte[] b = slot == NONE ? fromStore(block) : null;
        if (slot != NONE) {
            memory.get(slot, in, dst, off, n);
        } else if (b == null) {
            Arrays.fill(dst, off, off + n, (byte) 0);
        } else {
            System.arraycopy(b, in, dst, off, n);
        }
    }

    /** The dirty slot of a block, filled with what it reads as now if there is none. Holding this. */
    private int dirtySlot(long block) throws StoreException {
        int slot = dirty.getIfAbsent(block, NONE);
        if (slot != NONE) {
            return slot;
        }
        int s = takeReserved();
        try {
            int now = inMemory(block);
            if (now != NONE) {
                memory.copy(now, s);
            } else {
                byte[] b = fromStore(block);
                if (b == null) {
                    memory.zero(s, 0, BLOCK);
                } else {
                    memory.put(s, 0, b, 0, BLOCK);
                }
            }
        } catch (StoreException | RuntimeException e) {
            memory.give(s);
            throw e;
        }
        dirty.put(block, s);
        store.added(1);
        return s;
    }

    /**
     * Takes {@code n} slots of memory for the change about to be made, before it is logged or
     * made: a change that cannot have its memory fails (ENOMEM) with nothing changed. Holding this.
     */
    private void reserve(int n) throws StoreException {
        if (reserved.length < n) {
            reserved = new int[Math.max(n, 2 * reserved.length)];
        }
        try {
            while (reservedCount < n) {
                // not reserved[reservedCount++] = memory.take(): the index is evaluated, and counted,
                // before take() throws, and unreserve() then gave back a slot a block still held
                int slot = memory.take();
                reserved[reservedCount++] = slot;
            }
        } catch (StoreException e) {
            unreserve();
            throw e;
        }
    }

    private int takeReserved() throws StoreException {
        return reservedCount > 0 ? reserved[--reservedCount] : memory.take();
    }

    /** Gives back what the change did not use. Holding this. */
    private void unreserve() {
        while (reservedCount > 0) {
            memory.give(reserved[--reservedCount]);
        }
    }

    /** Blocks of [offset, offset + length) not dirty yet: the slots a write there takes. Holding this. */
    private int notDirty(long offset, long length) {
        int n = 0;
        for (long b = offset >>> SHIFT, last = (offset + length - 1) >>> SHIFT; length > 0 && b <= last; b++) {
            if (!dirty.containsKey(b)) {
                n++;
            }
        }
        return n;
    }

    /**
     * The partial blocks at the ends of [offset, offset + length) not dirty yet: the slots a
     * zeroing takes at most (a range inside one block is one partial block, unless it is the whole
     * block). Holding this.
     */
    private int partialEndsNotDirty(long offset, long length) {
        if (length <= 0) {
            return 0;
        }
        long end = offset + length;
        long first = offset >>> SHIFT;
        long last = (end - 1) >>> SHIFT;
        boolean headPartial = (offset & (BLOCK - 1)) != 0 || (first == last && (end & (BLOCK - 1)) != 0);
        boolean tailPartial = last != first && (end & (BLOCK - 1)) != 0;
        int n = 0;
        if (headPartial && !dirty.containsKey(first)) {
            n++;
        }
        if (tailPartial && !dirty.containsKey(last)) {
            n++;
        }
        return n;
    }

    /**
     * Makes the partial blocks at the ends of [offset, offset + length) dirty, with what they read
     * as now, before the change is logged: the store's read of their old bytes can fail (EIO), and
     * a change that fails must have changed nothing, in memory or in the log (a write logged but
     * not made in memory read as old until a crash, then as new). Needs the slots {@link
     * #partialEndsNotDirty} counts reserved. Holding this.
     */
    private void loadPartialEnds(long offset, long length) throws StoreException {
        if (length <= 0) {
            return;
        }
        long end = offset + length;
        long first = offset >>> SHIFT;
        long last = (end - 1) >>> SHIFT;
        if ((offset & (BLOCK - 1)) != 0 || (first == last && (end & (BLOCK - 1)) != 0)) {
            loadIfStored(first);
        }
        if (last != first && (end & (BLOCK - 1)) != 0) {
            loadIfStored(last);
        }
    }

    private void loadIfStored(long block) throws StoreException {
        if (!dirty.containsKey(block) && !knownZero(block)) {
            dirtySlot(block);
        }
    }

    /** Gives every slot of {@code map} back and empties it. */
    private void give(LongIntHashMap map) {
        map.forEachValue(memory::give);
        map.clear();
    }

    /** Takes the blocks of [from, to) out of {@code map} and gives their slots back; how many. Holding this. */
    private int giveRange(LongIntHashMap map, long from, long to) {
        int n = 0;
        if (to - from <= map.size()) {
            for (long b = from; b < to; b++) {
                int slot = map.removeKeyIfAbsent(b, NONE);
                if (slot != NONE) {
                    memory.give(slot);
                    n++;
                }
            }
        } else { // a range wider than the map (a truncate's is the device's whole capacity): its keys
            for (long b : map.keySet().toArray()) {
                if (b >= from && b < to) {
                    memory.give(map.removeKeyIfAbsent(b, NONE));
                    n++;
                }
            }
        }
        return n;
    }

    /**
     * Writes at {@code offset}, growing the device if the write ends past it. The write goes to
     * memory (and, for a FLUSH device, to the redo log); it may wait for a checkpoint while the
     * store's memory bound is reached, and fails with ENOSPC if none can run. Its log record grows
     * the size at replay as the write does here: one append, so a write that fails changed nothing
     * (a size record appended after it could fail alone, and left the write's bytes past the end,
     * where a growing truncate showed them).
     */
    public void write(long offset, byte[] src, int srcOffset, int length) throws StoreException {
        write(offset, ByteBuffer.wrap(src), srcOffset, length);
    }

    /**
     * Writes {@code length} bytes of {@code src} from its index {@code srcOffset} (its position is
     * neither used nor moved) at {@code offset}. A direct buffer (a FUSE request's, an NBD
     * request's) is copied once, into the device's memory (and, in flush mode, into the redo log's
     * page), with no array between: through an array first, a close-mode device took 1 MiB writes
     * through FUSE at 798 MiB/s, against 934 without it (medians of 7 interleaved rounds).
     */
    public void write(long offset, ByteBuffer src, int srcOffset, int length) throws StoreException {
        RadixBlockStore.checkRange(offset, length);
        store.admit();
        change(() -> {
            reserve(notDirty(offset, length));
            loadPartialEnds(offset, length);
            long end = offset + length;
            long was = size;
            if (end > was) {
                store.resize(name, was, end);
            }
            try {
                log(RedoLog.WRITE, offset, 0, src, srcOffset, length);
            } catch (StoreException e) {
                if (end > was) {
                    store.resize(name, end, was);
                }
                throw e;
            }
            if (end > was) {
                size = end; // as the log has it, whatever fails below (its reserve is then the size's, not leaked)
            }
            BlockWalk.each(offset, length, (block, in, done, n) -> {
                int slot;
                if (n == BLOCK && !dirty.containsKey(block)) {
                    slot = takeReserved();
                    dirty.put(block, slot);
                    store.added(1);
                } else {
                    slot = dirtySlot(block);
                }
                memory.put(slot, in, src, srcOffset + done, n);
            });
        });
    }

    /**
     * Makes a range read as zeros and frees its whole blocks (punch-hole, zero-range). Its range
     * waits in memory for the checkpoint, within the memory bound as blocks do ({@link
     * #chargeZeroRanges}): it may wait for a checkpoint as a write does.
     */
    public void zero(long offset, long length) throws StoreException {
        RadixBlockStore.checkRange(offset, length);
        store.admit();
        change(() -> {
            reserve(partialEndsNotDirty(offset, length));
            loadPartialEnds(offset, length);
            log(RedoLog.ZERO, offset, length, null, 0, 0);
            zeroRange(offset, length);
            chargeZeroRanges();
        });
    }

    /** Zero ranges held in memory per block of the memory bound they are charged as (about 128 bytes each). */
    static final int ZERO_RANGES_PER_BLOCK = 32;
    /** Blocks of the memory bound the zero ranges in memory are charged as. Guarded by this. */
    private long zeroRangesCharged;

    /**
     * Charges the zero ranges waiting in memory (zeros and frozenZeros) to the store's memory
     * bound, as blocks: a guest punching every other block made one range each, about 100 bytes
     * of heap, with no bound (a review found it; a close-mode device asks for no checkpoint on
     * its own). Holding this.
     */
    private void chargeZeroRanges() {
        long want = (zeros.size() + frozenZeros.size() + ZERO_RANGES_PER_BLOCK - 1) / ZERO_RANGES_PER_BLOCK;
        long delta = want - zeroRangesCharged;
        zeroRangesCharged = want;
        if (delta > 0) {
            store.added(delta);
        } else if (delta < 0) {
            store.released(-delta);
        }
    }

    /** Sets the size; shrinking frees every block past the new end. */
    public void truncate(long newSize) throws StoreException {
        RadixBlockStore.checkRange(0, newSize);
        change(() -> {
            long was = size;
            if (newSize < was) {
                reserve(partialEndsNotDirty(newSize, RadixBlockStore.CAPACITY - newSize));
                loadPartialEnds(newSize, RadixBlockStore.CAPACITY - newSize);
                log(RedoLog.ZERO, newSize, RadixBlockStore.CAPACITY - newSize, null, 0, 0);
                zeroRange(newSize, RadixBlockStore.CAPACITY - newSize);
                chargeZeroRanges();
                setSize(newSize);
                store.resize(name, was, newSize); // gives back: never fails
                return;
            }
            store.resize(name, was, newSize);
            try {
                setSize(newSize);
            } catch (StoreException e) {
                store.resize(name, newSize, was);
                throw e;
            }
        });
    }

    /** Whole blocks become a zero range (their dirty copies dropped); partial ones are rewritten. Holding this. */
    private void zeroRange(long offset, long length) throws StoreException {
        BlockWalk.zero(offset, length, new BlockWalk.Zeroing() {
            @Override
            public void part(long block, int in, int n) throws StoreException {
                if (!knownZero(block)) {
                    memory.zero(dirtySlot(block), in, n);
                }
            }

            @Override
            public void whole(long from, long to) {
                store.released(giveRange(dirty, from, to));
                zeros.add(from, to);
            }
        });
    }

    /**
     * The checkpoint's freeze, under the store's opLock held exclusively, right after the redo log
     * rotated: what is in memory now is what the log's old segments hold. Merged into what a
     * failed checkpoint left frozen, if anything: the newer state wins.
     */
    synchronized void freeze() {
        for (BlockRanges.Span r : zeros.list()) {
            store.released(giveRange(frozen, r.from(), r.to()));
            frozenZeros.add(r.from(), r.to());
        }
        zeros.clear();
        chargeZeroRanges();
        if (frozen.isEmpty()) {
            // the usual case, the last checkpoint drained everything: the map changes hands whole.
            // A put per block (up to --journal-memory of them) took 2-28 ms with every writer of
            // every device held off by the opLock meanwhile.
            LongIntHashMap empty = frozen;
            frozen = dirty;
            dirty = empty;
        } else {
            dirty.forEachKeyValue((block, slot) -> {
                int old = frozen.getIfAbsent(block, NONE);
                frozen.put(block, slot);
                if (old != NONE) {
                    memory.give(old);
                    store.released(1);
                }
            });
            dirty.clear();
        }
        frozenSize = size;
        frozenChanges = changes;
        version++;
    }

    /**
     * Moves what {@link #freeze()} froze into the store (not yet committed): zeros, then blocks;
     * {@code between} runs between batches (the store commits there when enough is buffered).
     */
    void drain(Runnable between) throws StoreException {
        synchronized (this) {
            for (BlockRanges.Span r : frozenZeros.list()) {
                blocks.zero(r.from() << SHIFT, (r.to() - r.from()) << SHIFT);
            }
            frozenZeros.clear();
            chargeZeroRanges();
        }
        ByteBuffer batch = store.drainBuffer(); // the store's, used by its checkpoint's thread alone
        long[] numbers = new long[DRAIN_BATCH];
        int[] slots = new int[DRAIN_BATCH];
        long[] order = new long[0]; // the frozen blocks in ascending order: the store's new slots follow the device's
        int next = 0;
        while (true) {
            int n = 0;
            turns.lock(); // in batches: a writer of this device waits for one batch's copy at most
            try {
                synchronized (this) {
                    if (frozen.isEmpty()) {
                        // every key was removed, and an open-addressing map keeps a mark in each
                        // one's slot, which the next freeze would hand to the writers as `dirty`:
                        // their puts walked past the marks (JFR in process: 32 of 1,238 samples)
                        frozen = new LongIntHashMap();
                        return;
                    }
                    if (next == order.length) {
                        order = frozen.keySet().toSortedArray();
                        next = 0;
                    }
                    for (; n < DRAIN_BATCH && next < order.length; next++) {
                        long block = order[next];
                        int slot = frozen.getIfAbsent(block, NONE);
                        if (slot == NONE) {
                            continue;
                        }
                        memory.get(slot, batch, n * BLOCK);
                        numbers[n] = block;
                        slots[n++] = slot;
                    }
                }
            } finally {
                turns.unlock();
            }
            // Written to the store's blocks file with no lock of this device held, so its writers
            // and readers go on beside the disk's write: the slots are new, and nothing points at
            // them until apply. The frozen blocks stay where readers find them meanwhile; only
            // this checkpoint's thread changes frozen, and the store's monitor it holds keeps
            // deletes out.
            RadixBlockStore.Staged staged = blocks.stage(numbers, batch, n);
            turns.lock();
            try {
                synchronized (this) {
                    blocks.apply(staged);
                    for (int i = 0; i < n; i++) {
                        frozen.remove(numbers[i]);
                        memory.give(slots[i]);
                    }
                    store.released(n);
                    version++;
                }
            } finally {
                turns.unlock();
            }
            between.run();
        }
    }

    /** Writes this device's changed radix nodes to the store, before the store commits. */
    void flushNodes() {
        blocks.flushNodes();
    }

    @FunctionalInterface
    private interface Change {
        void apply() throws StoreException;
    }

    /**
     * Runs a change of this device: the store's opLock shared (a checkpoint waits for it), then
     * this device's monitor, so its redo log records are in the order of its changes. A wait for
     * opLock is a {@link Parking}.
     */
    private void change(Change c) throws StoreException {
        enter();
        try {
            if (!Parking.lock(store.opLock().readLock())) {
                throw new StoreException(StoreException.EIO, "journal device " + name + ": the store is busy (a "
                        + "checkpoint holds it) and too many requests already wait on it or on other subsystems");
            }
            turns.lock();
            try {
                synchronized (this) {
                    checkLive();
                    version++;
                    changes++; // before: one that fails part way counts too
                    store.touched();
                    try {
                        c.apply();
                    } finally {
                        unreserve();
                    }
                }
            } finally {
                turns.unlock();
                store.opLock().readLock().unlock();
            }
        } finally {
            exit();
        }
    }

    /**
     * The size goes to the redo log now, and to the catalog at the next checkpoint. Logged first:
     * a size set in memory whose record failed to append (ENOSPC, EIO) let a later write inside it
     * log no size of its own, and after a crash its flushed data lay past the size replay gave
     * back (found by a review).
     */
    private void setSize(long newSize) throws StoreException {
        log(RedoLog.SIZE, newSize, 0, null, 0, 0);
        size = newSize;
    }

    /** A FLUSH device's change goes to the redo log too, in the order of its changes. */
    private void log(byte type, long a, long b, ByteBuffer data, int off, int len) throws StoreException {
        if (durability == Durability.FLUSH) {
            store.redo().append(type, blocks.rootRecid(), a, b, data, off, len);
            store.logAppended();
        }
    }

    /** Applies a redo log record at recovery, straight to the store (not logged again). */
    synchronized void replay(byte type, long a, long b, byte[] data) throws StoreException {
        switch (type) {
            case RedoLog.WRITE -> {
                blocks.write(a, data, 0, data.length);
                if (a + data.length > size) { // a write past the end grows the device, with no record of its own
                    size = a + data.length;
                    frozenSize = size;
                }
            }
            case RedoLog.ZERO -> blocks.zero(a, b);
            case RedoLog.SIZE -> {
                size = a;
                frozenSize = a;
            }
            default -> throw new StoreException(StoreException.EIO, "redo log: unknown record type " + type);
        }
        version++;
    }

    /**
     * fsync/fdatasync. FLUSH: returns once everything written to the device is in the redo log on
     * disk. CLOSE: returns at once (the contents persist at close, unmount or the next timer).
     */
    public void flush() throws StoreException {
        lastFlush = System.currentTimeMillis();
        long start = System.nanoTime();
        enter();
        try {
            String why = lost; // a deleted device's flush returns, as it always did: nothing of it is left to force
            if (why != null) {
                throw new StoreException(StoreException.EIO, why);
            }
            if (durability == Durability.FLUSH) {
                store.awaitLogSync();
            }
        } finally {
            exit();
        }
        long nanos = System.nanoTime() - start;
        flushLatency.incrementAndGet(Math.min(FLUSH_BUCKETS - 1, 63 - Long.numberOfLeadingZeros(Math.max(1, nanos / 1000))));
        flushNanos.add(nanos);
    }

    /** Buckets of {@link #flushLatency()}: the last holds every flush of 2^39 µs or longer. */
    public static final int FLUSH_BUCKETS = 40;
    private final AtomicLongArray flushLatency = new AtomicLongArray(FLUSH_BUCKETS);
    private final LongAdder flushNanos = new LongAdder();

    /**
     * Flushes that returned since the store was opened (a failed one is not counted), by how long
     * each waited: element i counts those of 2^i to 2^(i+1) - 1 microseconds (a close-mode flush,
     * or one with nothing new to force, returns at once, in the first buckets).
     */
    public long[] flushLatency() {
        long[] out = new long[FLUSH_BUCKETS];
        for (int i = 0; i < out.length; i++) {
            out[i] = flushLatency.get(i);
        }
        return out;
    }

    /** The time every flush of {@link #flushLatency()} took, in all. */
    public long flushNanos() {
        return flushNanos.sum();
    }
}
