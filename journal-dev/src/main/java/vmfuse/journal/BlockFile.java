package vmfuse.journal;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.BitSet;

import org.eclipse.collections.impl.list.mutable.primitive.IntArrayList;

import vmfuse.durable.Disk;
import vmfuse.durable.DiskFile;

/*
 * The blocks of a store's journal devices (STORE/journals.db.blocks): a file of 4 KiB slots, each
 * holding one block that a device's radix tree points to (RadixBlockStore). MapDB keeps only the
 * trees and the catalog.
 *
 * Why not MapDB records, as format 2 kept blocks: a checkpoint that overwrote a block updated its
 * record in place, and under AtomicVolume an update of a committed page is written twice (the
 * commit file, then the store), so each block a guest rewrote reached the disk three times with
 * the redo log's copy; and MapDB's put and its page copies were most of a checkpoint's CPU (JFR:
 * StoreDirect.put 569 of 775 samples).
 *
 * Copy on write. A checkpoint writes a block into a free slot, never over one that the last
 * commit may point to, so no commit needs the slots' old contents and none is written twice:
 *   1. the drain writes blocks into free slots and points the trees at them (in memory);
 *   2. before MapDB commits (AtomicVolume#sync, through beforeCommit), this file is forced: a
 *      commit never points at a slot whose bytes are not on the disk;
 *   3. a slot the trees stopped pointing at (the block rewritten, zeroed or its device deleted)
 *      is free only once a commit that no longer points at it is durable (afterCommit): until
 *      then the state a crash opens may still read it. Then its bytes are punched out of the file,
 *      so what a store holds on disk follows what its devices hold.
 * A crash anywhere leaves written slots no commit points at: opening finds them free (the slots
 * in use are rebuilt from the trees at every open, nothing else is kept) and punches them.
 *
 * A failed force fails the commit after it (nothing points at what it did not force), and the
 * slots written since the last force are written again before the next one: the kernel may have
 * dropped the pages it could not write and call them clean, and a later fsync that succeeds does
 * not make those durable (the PostgreSQL fsync lesson). So this file keeps a copy of what it
 * wrote and has not forced, at most UNFORCED_MAX bytes: it forces when that is full. Those
 * slots were written after the last commit, so no commit points at them and writing them again
 * in place is safe.
 *
 * Writes go through the page handle (O_DIRECT on a real disk, as AtomicVolume's fresh pages): a
 * checkpoint's blocks are written once and read back rarely. Slots are numbered from 0, at most
 * 2^31 - 1 of them (8 TiB).
 *
 * Thread-safe: the slot map under this monitor; reads and writes of slots are positional.
 */
final class BlockFile implements AutoCloseable {
    static final int BLOCK = BlockWalk.BLOCK;

    /** Slots of a free run that a write of more takes rather than a smaller hole (256 KiB: O_DIRECT here, 1.2 GB/s in 512 KiB writes, 0.65 in 128 KiB). */
    static final int MIN_RUN = 64;
    /** Bytes written and not forced, at most (their copy's size). */
    static final int UNFORCED_MAX = 4 << 20;

    private final Disk disk;
    private final Path path;
    private final DiskFile file;
    /** Where writes go: O_DIRECT on a real disk (Disk#openForPageWrites); made at the first write. */
    private DiskFile pages; // guarded by this
    /** Slots a tree points to, or that a commit not yet durable may point to. Guarded by this. */
    private final BitSet used = new BitSet();
    /** No free slot below this. Guarded by this. */
    private int lowestFree;
    /** Slots the trees stopped pointing at since the last commit began. Guarded by this. */
    private IntArrayList dropped = new IntArrayList();
    /** Bytes written since the last force; what of copy holds them. Guarded by this. */
    private int unforced;
    /**
     * What was written since the last force, run after run: aligned, as it is written again
     * through the page handle; made at open, so that a checkpoint needs no direct memory of its
     * own when the blocks in memory have taken all there is. Guarded by this.
     */
    private final ByteBuffer copy = Disk.alignedBuffer(UNFORCED_MAX);
    /** Where those runs went: first slot, count, per run. Guarded by this. */
    private final IntArrayList copied = new IntArrayList();
    /** A force failed: the runs copied are written again before the next. Guarded by this. */
    private boolean rewrite;
    /** Bytes written between forces; 0: forced only before a commit (see forceEvery). Guarded by this. */
    private int forceStep;

    private BlockFile(Disk disk, Path path, DiskFile file) {
        this.disk = disk;
        this.path = path;
        this.file = file;
    }

    static Path blocksFile(Path store) {
        return store.resolveSibling(store.getFileName() + ".blocks");
    }

    /**
     * Opens (creating it, and syncing its directory, if it is not there) the blocks file of the
     * store at {@code store}. Until {@link #opened} every slot is free: the owner marks the slots
     * its trees point to as it loads them ({@link #use}).
     */
    static BlockFile open(Disk disk, Path store) throws IOException {
        Path path = blocksFile(store);
        boolean existed = disk.exists(path);
        DiskFile f = disk.open(path, true);
        try {
            if (!existed) {
                disk.syncDirectory(path.toAbsolutePath().getParent());
            }
        } catch (IOException | RuntimeException e) {
            f.close();
            throw e;
        }
        return new BlockFile(disk, path, f);
    }

    Path path() {
        return path;
    }

    /** A slot a loaded tree points to; false if another already does (the store is corrupt). */
    synchronized boolean use(long slot) {
        if (slot < 0 || slot >= Integer.MAX_VALUE || used.get((int) slot)) {
            return false;
        }
        used.set((int) slot);
        return true;
    }

    /**
     * Every tree is loaded: slots none points to hold nothing a commit needs (a checkpoint a crash
     * cut short wrote them), so the file is cut after the last slot in use and the free slots
     * below it are punched.
     */
    synchronized void opened() throws IOException {
        int end = used.length();
        if (file.size() < (long) end * BLOCK) { // a commit forces what it points at: this file was cut or replaced
            throw new IOException(path + " holds " + file.size() + " bytes, and the store's devices have blocks up to "
                    + (long) end * BLOCK + ": it was cut short or replaced; nothing is changed");
        }
        if (file.size() > (long) end * BLOCK) {
            file.truncate((long) end * BLOCK);
        }
        punchFree(0, end);
        lowestFree = used.nextClearBit(0);
    }

    /** Punches every free run of slots in [from, to). */
    private void punchFree(int from, int to) throws IOException {
        int at = used.nextClearBit(from);
        while (at < to) {
            int next = used.nextSetBit(at);
            int runEnd = next < 0 ? to : Math.min(to, next);
            file.punch((long) at * BLOCK, (long) (runEnd - at) * BLOCK);
            at = used.nextClearBit(runEnd);
        }
    }

    /**
     * Writes {@code count} blocks from {@code data} (count * 4096 bytes from its position; an
     * aligned direct buffer) into free slots, in as few writes as the free runs allow, and
     * returns their slots. A write that fails frees the slots it took (nothing points at them)
     * and throws.
     */
    synchronized int[] write(ByteBuffer data, int count) throws IOException {
        if (count > UNFORCED_MAX / BLOCK) {
            throw new IllegalArgumentException(count + " blocks in one write");
        }
        if (unforced + count * BLOCK > UNFORCED_MAX) {
            force(); // room in the copy for all of it, before any slot is taken
        }
        // paced (forceEvery): pieces of a step at most, each forced before the next would pass it
        int piece = forceStep > 0 ? Math.max(1, Math.min(forceStep, UNFORCED_MAX) / BLOCK) : count;
        int[] slots = new int[count];
        int i = 0;
        int copiedBefore = copied.size();
        int unforcedBefore = unforced;
        try {
            while (i < count) {
                int first = freeRun(Math.min(count - i, MIN_RUN));
                if (first == Integer.MAX_VALUE) {
                    throw new IOException("File too large: the blocks file holds 2^31 - 1 slots at most");
                }
                int runEnd = used.nextSetBit(first);
                int n = Math.min(piece, runEnd < 0 ? count - i : Math.min(count - i, runEnd - first));
                if (forceStep > 0 && unforced > 0 && unforced + n * BLOCK > forceStep) {
                    force();
                    copiedBefore = 0; // what this write wrote so far is forced: no longer in the copy
                    unforcedBefore = 0;
                }
                for (int k = 0; k < n; k++) {
                    slots[i + k] = first + k;
                    used.set(first + k);
                }
                if (first == lowestFree) {
                    lowestFree = used.nextClearBit(first + n);
                }
                ByteBuffer part = data.slice(data.position() + i * BLOCK, n * BLOCK);
                i += n;
                writeFully(part, (long) first * BLOCK);
                copy.put(unforced, part.rewind(), 0, n * BLOCK);
                copied.add(first);
                copied.add(n);
                unforced += n * BLOCK;
            }
        } catch (IOException | RuntimeException e) {
            for (int k = 0; k < i; k++) {
                free(slots[k]);
            }
            // the slots go back free: nothing of this write may be written again over them
            while (copied.size() > copiedBefore) {
                copied.removeAtIndex(copied.size() - 1);
            }
            unforced = unforcedBefore;
            throw e;
        }
        return slots;
    }

    /**
     * While {@code bytes} is not 0, writes are forced every {@code bytes}: a checkpoint beside
     * flushes of the redo log, on the same disk, leaves at most that much for a flush to wait
     * behind (as AtomicVolume#forceEvery, which says what it was measured to cost).
     */
    synchronized void forceEvery(int bytes) {
        forceStep = bytes;
    }

    /**
     * Forces what was written since the last force, first writing it again if a force failed
     * since (see the top).
     */
    private void force() throws IOException {
        if (rewrite) {
            for (int r = 0, at = 0; r < copied.size(); r += 2) {
                int bytes = copied.get(r + 1) * BLOCK;
                writeFully(copy.slice(at, bytes), (long) copied.get(r) * BLOCK);
                at += bytes;
            }
        }
        try {
            (pages == null ? file : pages).force(false);
        } catch (IOException | RuntimeException e) {
            rewrite = true;
            throw e;
        }
        rewrite = false;
        unforced = 0;
        copied.clear();
    }

    private void writeFully(ByteBuffer src, long pos) throws IOException {
        if (pages == null) {
            pages = disk.openForPageWrites(path);
        }
        pages.writeFully(src, pos); // through the page cache where O_DIRECT is refused (Disk#openForPageWrites)
    }

    /**
     * The first slot of the first free run of at least {@code want} slots (the free end of the
     * file is one). So a checkpoint's 1 MiB goes out in writes of MIN_RUN slots or more, not into
     * the single holes that small writes all over a device leave; small writes fill those.
     * Measured through FUSE, 5 s of 4 KiB writes with fdatasync over 64 MiB of a close-mode
     * device, then its 512 MiB sequential rewrite twice, three interleaved runs on a noisy disk:
     * 200-588 MiB/s (second rewrites 362, 588, 559) against 188-410 taking the lowest holes first
     * (205, 188, 410).
     */
    private int freeRun(int want) {
        int at = lowestFree;
        while (at != Integer.MAX_VALUE) {
            int end = used.nextSetBit(at);
            if (end < 0 || end - at >= want) {
                return at;
            }
            at = used.nextClearBit(end);
        }
        return at;
    }

    private void free(int slot) {
        used.clear(slot);
        lowestFree = Math.min(lowestFree, slot);
    }

    /** Reads a slot's 4096 bytes into {@code dst}; EIO (as an IOException) if the file ends before it. */
    void read(long slot, ByteBuffer dst) throws IOException {
        if (!file.readFully(dst, slot * BLOCK)) {
            throw new IOException("slot " + slot + " is past the end of " + path + " (" + file.size() + " bytes)");
        }
    }

    /** A tree no longer points at {@code slot}: free once a commit without it is durable. */
    synchronized void drop(long slot) {
        dropped.add((int) slot);
    }

    /**
     * Before MapDB commits: forces what was written, so the commit points at nothing that is not
     * on the disk. Returns the slots this commit stops pointing at, for {@link #afterCommit}.
     */
    synchronized IntArrayList beforeCommit() throws IOException {
        if (unforced > 0 || rewrite) {
            force();
        }
        IntArrayList releasing = dropped;
        dropped = new IntArrayList();
        return releasing;
    }

    /**
     * After MapDB's commit: if it is durable, the slots it stopped pointing at are free and their
     * bytes punched; if not, they wait for the next commit (MapDB still holds the change and
     * commits it then).
     */
    synchronized void afterCommit(IntArrayList releasing, boolean durable) {
        if (!durable) {
            releasing.addAll(dropped);
            dropped = releasing;
            return;
        }
        int[] slots = releasing.toSortedArray();
        for (int s : slots) {
            free(s);
        }
        try {
            for (int i = 0; i < slots.length; ) {
                int j = i + 1;
                while (j < slots.length && slots[j] == slots[j - 1] + 1) {
                    j++;
                }
                file.punch((long) slots[i] * BLOCK, (long) (j - i) * BLOCK);
                i = j;
            }
        } catch (IOException e) {
            // the slots are free all the same: a punch only gives the disk back its space early
            org.slf4j.LoggerFactory.getLogger(BlockFile.class).warn("cannot punch freed blocks in {}: {}", path,
                    e.getMessage());
        }
    }

    /** Slots in use (pointed to, or waiting for a durable commit to be freed): what the file holds on disk. */
    synchronized long slotsUsed() {
        return used.cardinality();
    }

    @Override
    public synchronized void close() throws IOException {
        try {
            if (pages != null) {
                pages.close();
            }
        } finally {
            file.close();
        }
    }
}
