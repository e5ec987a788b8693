package vmfuse.journal;

/**
 * The one walk over the 4 KiB blocks of a byte range, for the radix store and the devices alike
 * (as nbdkit's sparse allocator runs every operation through one lookup loop), and the range
 * check both make first.
 */
final class BlockWalk {
    private BlockWalk() {}

    /** The block of every journal device and of its store. */
    static final int BLOCK = 4096;
    static final int SHIFT = 12;
    /** The largest byte range: up to 2^63 - 1. */
    static final long CAPACITY = Long.MAX_VALUE;

    /** One piece of a range: {@code n} bytes of block {@code block} from byte {@code in}, at {@code done} into the range. */
    @FunctionalInterface
    interface Piece {
        void run(long block, int in, int done, int n) throws StoreException;
    }

    /** What a zeroed range does with the parts of blocks at its ends and with the whole blocks between. */
    interface Zeroing {
        void part(long block, int in, int n) throws StoreException;

        /** Blocks {@code [from, to)}, whole. */
        void whole(long from, long to) throws StoreException;
    }

    /** EINVAL for a negative offset or length, EFBIG for a range past 2^63. */
    static void checkRange(long offset, long length) throws StoreException {
        if (offset < 0 || length < 0) {
            throw new StoreException(StoreException.EINVAL, "bad range offset=" + offset + " length=" + length);
        }
        if (length > CAPACITY - offset) {
            throw new StoreException(StoreException.EFBIG, "range past 2^63: offset=" + offset + " length=" + length);
        }
    }

    /** Runs {@code piece} on each block's piece of {@code [offset, offset + length)}, in order. */
    static void each(long offset, int length, Piece piece) throws StoreException {
        int done = 0;
        while (done < length) {
            long pos = offset + done;
            int in = (int) (pos & (BLOCK - 1));
            int n = Math.min(BLOCK - in, length - done);
            piece.run(pos >>> SHIFT, in, done, n);
            done += n;
        }
    }

    /**
     * Splits a zeroed range into the part of a block at its head, the whole blocks, and the part
     * of a block at its tail (a range inside one block is one part).
     */
    static void zero(long offset, long length, Zeroing z) throws StoreException {
        if (length == 0) {
            return;
        }
        long end = offset + length; // <= 2^63 - 1
        long firstWhole = (offset + BLOCK - 1) >>> SHIFT;
        long endWhole = end >>> SHIFT; // exclusive
        if (firstWhole > endWhole) { // inside one block
            z.part(offset >>> SHIFT, (int) (offset & (BLOCK - 1)), (int) length);
            return;
        }
        if ((offset & (BLOCK - 1)) != 0) {
            int in = (int) (offset & (BLOCK - 1));
            z.part(offset >>> SHIFT, in, BLOCK - in);
        }
        if (firstWhole < endWhole) {
            z.whole(firstWhole, endWhole);
        }
        if ((end & (BLOCK - 1)) != 0) {
            z.part(end >>> SHIFT, 0, (int) (end & (BLOCK - 1)));
        }
    }
}
