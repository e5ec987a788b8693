package vmfuse.journal;

import java.nio.ByteBuffer;
import java.util.Arrays;

/*
 * The memory journal blocks wait in between checkpoints: 4 KiB slots in direct buffers of 1 MiB,
 * outside the Java heap, taken and given back by the store's devices.
 *
 * Why not byte[4096] per block: the blocks written since the last checkpoint (up to
 * --journal-memory, 128 MiB by default) are live when the young generation is collected, so a
 * copying collector copied every block at least once, and the old generation then filled with
 * blocks a checkpoint had released, which a full collection compacted, every FUSE thread stopped
 * meanwhile. Measured on a close-mode device taking 512 MiB of 1 MiB writes with the serial
 * collector: 0.85 s of pauses in a 2.4 s run. Here the collector sees a few buffers that never
 * move.
 *
 * A slot is an int: chunk (slot >>> 8), byte offset (slot & 255) << 12 in it. Chunks are
 * allocated as slots run out and kept while any slot is taken; a checkpoint that empties memory
 * lets go of those no interval needed for a minute or more (trim). What this holds is at most the memory
 * bound plus what writers admitted just under it wrote. Thread-safe: slots are taken and given
 * back under this monitor; a slot's bytes are read and written by whoever holds it, with absolute
 * gets and puts that never touch a buffer's position, under the owning device's monitor.
 */
final class BlockMemory {
    static final int BLOCK = RadixBlockStore.BLOCK_SIZE;
    private static final int SLOTS_PER_CHUNK = 256;
    private static final int CHUNK_SHIFT = 8;
    private static final byte[] ZEROS = new byte[BLOCK];

    /** Replaced, never changed, when a chunk is added: readers outside the monitor see a whole array. */
    private volatile ByteBuffer[] chunks = new ByteBuffer[0];
    private int[] free = new int[SLOTS_PER_CHUNK]; // guarded by this
    private int freeCount; // guarded by this
    private int taken; // guarded by this
    private int peak; // the most slots taken at once since the last trim; guarded by this
    /** How long chunks stay after the last interval that needed them (see {@link #trim}). */
    static final long IDLE_NANOS = 60_000_000_000L;
    private final java.util.function.LongSupplier clock;
    /** The most chunks an interval needed in the window that began at {@code windowStart}, and in the one before. Guarded by this. */
    private int windowNeed;
    private int lastWindowNeed;
    private long windowStart;
    private long failedAt; // System.nanoTime() of the last failure to allocate a chunk, 0 if none; guarded by this

    BlockMemory() {
        this(System::nanoTime);
    }

    /** Block memory whose trims tell time by {@code clock} (nanoseconds; a test's own). */
    BlockMemory(java.util.function.LongSupplier clock) {
        this.clock = clock;
        this.windowStart = clock.getAsLong();
    }

    /**
     * A slot whose contents are undefined until written. ENOMEM if the JVM's direct memory (as
     * large as its heap unless -XX:MaxDirectMemorySize says otherwise) has no room for another
     * chunk: the write fails, nothing written before is touched.
     */
    synchronized int take() throws StoreException {
        if (freeCount == 0) {
            // the JDK collects and retries for about half a second before it gives up on direct
            // memory: after a failure, writes fail at once for a second instead of each waiting
            if (failedAt != 0 && System.nanoTime() - failedAt < 1_000_000_000L) {
                throw noRoom(null);
            }
            try {
                grow();
                failedAt = 0;
            } catch (OutOfMemoryError e) {
                failedAt = System.nanoTime();
                throw noRoom(e);
            }
        }
        if (++taken > peak) {
            peak = taken;
        }
        return free[--freeCount];
    }

    synchronized void give(int slot) {
        if (freeCount == free.length) {
            free = Arrays.copyOf(free, free.length * 2);
        }
        free[freeCount++] = slot;
        taken--;
    }

    private void grow() {
        ByteBuffer[] c = chunks;
        int first = c.length << CHUNK_SHIFT;
        ByteBuffer[] next = Arrays.copyOf(c, c.length + 1);
        next[c.length] = ByteBuffer.allocateDirect(SLOTS_PER_CHUNK * BLOCK);
        chunks = next;
        if (free.length < SLOTS_PER_CHUNK) {
            free = new int[SLOTS_PER_CHUNK];
        }
        for (int i = SLOTS_PER_CHUNK - 1; i >= 0; i--) { // slot `first` is taken first
            free[freeCount++] = first + i;
        }
    }

    private StoreException noRoom(OutOfMemoryError e) {
        return new StoreException(StoreException.ENOMEM, "journal memory: no room for another MiB of blocks outside "
                + "the heap (" + ((long) chunks.length * SLOTS_PER_CHUNK * BLOCK >> 20) + " MiB held; the JVM's direct "
                + "memory is full)", e);
    }

    /**
     * Lets go of the chunks no interval between two trims (checkpoints) needed for a minute or
     * more ({@link #IDLE_NANOS}: the most slots taken at once in the current window of that
     * length and in the one before), beyond the first {@code keep}, if no slot is taken (a
     * checkpoint just emptied memory). A stream of writes, or bursts that come back within the
     * minute, keep the chunks they fill: a chunk allocated anew costs more than the writes into
     * it (ByteBuffer.allocateDirect, 1 MiB: 0.5 ms, 2.9 ms once the JVM's direct memory is near
     * its cap and it collects to find room; its first touch, on a VM whose host backs memory on
     * first touch, about 2.8 ms; copying 1 MiB of blocks in: 0.15 ms). A close-mode device taking
     * 512 MiB of sequential writes into memory that every checkpoint had given back took 380-500
     * us per 128 KiB write against 30 us into memory kept; given back at the first checkpoint
     * that found memory unused (the timer's, within 5 s of a burst, or an operator's), the next
     * burst paid it again. A store whose devices went quiet gives the memory back within two
     * minutes.
     */
    synchronized void trim(int keep) {
        int used = (peak + SLOTS_PER_CHUNK - 1) >>> CHUNK_SHIFT;
        peak = taken;
        long now = clock.getAsLong();
        if (now - windowStart >= IDLE_NANOS) {
            lastWindowNeed = now - windowStart >= 2 * IDLE_NANOS ? 0 : windowNeed; // a window with no trim needed nothing
            windowNeed = 0;
            windowStart = now;
        }
        windowNeed = Math.max(windowNeed, used);
        int needed = Math.max(keep, Math.max(windowNeed, lastWindowNeed));
        ByteBuffer[] c = chunks;
        if (taken != 0 || c.length <= needed) {
            return;
        }
        chunks = Arrays.copyOf(c, needed);
        free = new int[Math.max(SLOTS_PER_CHUNK, needed * SLOTS_PER_CHUNK)];
        freeCount = 0;
        for (int slot = needed * SLOTS_PER_CHUNK - 1; slot >= 0; slot--) {
            free[freeCount++] = slot;
        }
    }

    /** Bytes of slots allocated (taken or free). */
    synchronized long capacity() {
        return (long) chunks.length * SLOTS_PER_CHUNK * BLOCK;
    }

    /** Slots taken. */
    synchronized int taken() {
        return taken;
    }

    private ByteBuffer chunk(int slot) {
        return chunks[slot >>> CHUNK_SHIFT];
    }

    private static int at(int slot, int in) {
        return ((slot & (SLOTS_PER_CHUNK - 1)) << 12) + in;
    }

    void put(int slot, int in, byte[] src, int off, int n) {
        chunk(slot).put(at(slot, in), src, off, n);
    }

    /** {@code n} bytes of {@code src} from its index {@code off} (its position not used or moved). */
    void put(int slot, int in, ByteBuffer src, int off, int n) {
        chunk(slot).put(at(slot, in), src, off, n);
    }

    void get(int slot, int in, byte[] dst, int off, int n) {
        chunk(slot).get(at(slot, in), dst, off, n);
    }

    /** Copies a whole slot's contents into {@code dst} at {@code at}. */
    void get(int slot, ByteBuffer dst, int at) {
        dst.put(at, chunk(slot), at(slot, 0), BLOCK);
    }

    /** Copies a whole slot's contents into another. */
    void copy(int from, int to) {
        chunk(to).put(at(to, 0), chunk(from), at(from, 0), BLOCK);
    }

    void zero(int slot, int in, int n) {
        put(slot, in, ZEROS, 0, n);
    }
}
