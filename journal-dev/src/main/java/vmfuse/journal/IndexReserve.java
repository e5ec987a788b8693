package vmfuse.journal;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The heap a journal store's radix trees may take, reserved by device size. Every node of a
 * device's tree is on the heap for as long as the store is open ({@link RadixBlockStore}), and
 * a device's guest decides how many there are: one 4 KiB node per 2 MiB it has written in, so a
 * guest writing a block every 2 MiB of a large device took a node per block, outside
 * --journal-memory, until the daemon ran out of heap and every VM with it. So each device
 * reserves, for as long as it has its size, the nodes the largest tree of that size could hold;
 * a create, truncate or write that would reserve past the limit fails with EFBIG, and no guest
 * can take what another device reserved.
 *
 * <p>At 4.2 KiB of heap per node, a device reserves about 0.2% of its size: the default limit, a
 * quarter of the JVM's heap (-Xmx512m: about 124 MiB), holds about 60 GiB of journal devices.
 */
final class IndexReserve {
    private static final Logger log = LoggerFactory.getLogger(IndexReserve.class);
    /** Heap per node: its long[512], the array's header, and its entries in the node map and the changed set. */
    static final long NODE_BYTES = 4096 + 16 + 96;

    private final long limit;
    private long reserved; // guarded by this

    IndexReserve(long limitBytes) {
        this.limit = limitBytes;
    }

    /** A quarter of the JVM's heap. */
    static long defaultLimit() {
        return Runtime.getRuntime().maxMemory() / 4;
    }

    /** Bytes of heap the tree of a device of {@code size} bytes may take at most: every node it could need. */
    static long worstCase(long size) {
        // blocks, rounded up without overflow: size + BLOCK_SIZE - 1 wraps near 2^63 (a review found a
        // truncate to 2^63 - 1 giving a negative reserve, which lifted the limit for the whole store)
        long below = size / RadixBlockStore.BLOCK_SIZE + (size % RadixBlockStore.BLOCK_SIZE != 0 ? 1 : 0);
        long nodes = 1; // the root
        for (int level = RadixBlockStore.LEVELS - 1; level >= 1; level--) {
            below = (below + RadixBlockStore.FANOUT - 1) / RadixBlockStore.FANOUT;
            nodes += below;
        }
        return nodes * NODE_BYTES;
    }

    /**
     * Device {@code name} goes from {@code from} bytes to {@code to}: reserves the difference, or
     * gives it back. EFBIG, reserving nothing, if a growth passes the limit.
     */
    synchronized void resize(String name, long from, long to) throws StoreException {
        long delta = worstCase(to) - worstCase(from);
        if (delta > 0 && reserved + delta > limit) {
            throw new StoreException(StoreException.EFBIG, "journal device " + name + ": a size of " + to
                    + " bytes would let its guest fill " + ByteSize.format(worstCase(to)) + " of the daemon's heap "
                    + "with its index (a 4 KiB node per 2 MiB written in); the journal devices of this store may "
                    + "reserve " + ByteSize.format(limit) + " (a quarter of the JVM's heap: JAVA_OPTS=-Xmx... raises it), "
                    + ByteSize.format(reserved) + " of it taken");
        }
        reserved += delta;
    }

    /** What the devices found at open reserve: counted even past the limit (nothing of theirs is refused), which then admits no growth. */
    synchronized void opened(long sizeTotalReserved) {
        reserved = sizeTotalReserved;
        if (reserved > limit) {
            log.warn("journal devices reserve {} of heap for their index, past the limit of {} (a quarter of the JVM's "
                    + "heap): no device grows until some are deleted or shrunk, or the daemon has more heap "
                    + "(JAVA_OPTS=-Xmx...)", ByteSize.format(reserved), ByteSize.format(limit));
        }
    }

    synchronized long reserved() {
        return reserved;
    }

    long limit() {
        return limit;
    }
}
