package vmfuse.nbd;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Map;
import java.util.Queue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * An export over memory, for the protocol's tests (the module serves exports behind an
 * interface; the daemon's, over images and journal devices, are tested through fs): 4 KiB blocks,
 * a block holds data once written, a trim or a zero without NO_HOLE makes a hole of what it
 * covers whole. It counts what it was asked.
 */
final class MemoryExport implements Export {
    static final int BLOCK = 4096;

    final byte[] disk;
    final BitSet data = new BitSet();
    final AtomicInteger flushes = new AtomicInteger();
    final AtomicInteger trims = new AtomicInteger();
    final AtomicInteger zeroes = new AtomicInteger();
    final AtomicInteger opens = new AtomicInteger();
    final AtomicInteger closes = new AtomicInteger();
    /** The threads that did the writes, in order. */
    final Queue<String> writeThreads = new ConcurrentLinkedQueue<>();
    /** Told of each read and write ("read" or "write", its length), on the thread doing it; null: nobody. */
    volatile java.util.function.ObjLongConsumer<String> onIo;
    /** How long a read takes, as a disk's would (0: at once). */
    volatile long readMillis;

    MemoryExport(int size) {
        disk = new byte[size];
    }

    /** Exports of these memory disks by name, in the map's order (a LinkedHashMap keeps it). */
    static Exports serving(Map<String, MemoryExport> byName) {
        return new Exports() {
            @Override
            public List<String> names(Peer peer) {
                return List.copyOf(byName.keySet());
            }

            @Override
            public Export open(Peer peer, String name) {
                MemoryExport e = byName.get(name);
                return e == null ? null : e.open();
            }
        };
    }

    /** As an export a connection opens. */
    Export open() {
        opens.incrementAndGet();
        return this;
    }

    @Override
    public long size() {
        return disk.length;
    }

    @Override
    public boolean multiConn() {
        return true;
    }

    @Override
    public void read(long offset, ByteBuffer dst) {
        java.util.function.ObjLongConsumer<String> hook = onIo;
        if (hook != null) {
            hook.accept("read", dst.remaining());
        }
        long ms = readMillis;
        if (ms > 0) {
            try {
                Thread.sleep(ms); // outside the lock, as reads from a disk go side by side
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        synchronized (this) {
            dst.put(disk, (int) offset, dst.remaining());
        }
    }

    @Override
    public synchronized void write(long offset, ByteBuffer src) {
        writeThreads.add(Thread.currentThread().getName());
        java.util.function.ObjLongConsumer<String> hook = onIo;
        if (hook != null) {
            hook.accept("write", src.remaining());
        }
        int n = src.remaining();
        src.get(disk, (int) offset, n);
        data.set((int) (offset / BLOCK), (int) ((offset + n + BLOCK - 1) / BLOCK));
    }

    @Override
    public void flush() {
        flushes.incrementAndGet();
    }

    @Override
    public synchronized void trim(long offset, long length) {
        trims.incrementAndGet();
        hole(offset, length);
    }

    @Override
    public synchronized void zero(long offset, long length, boolean noHole) {
        zeroes.incrementAndGet();
        if (noHole) {
            java.util.Arrays.fill(disk, (int) offset, (int) (offset + length), (byte) 0);
            data.set((int) (offset / BLOCK), (int) ((offset + length + BLOCK - 1) / BLOCK));
        } else {
            hole(offset, length);
        }
    }

    private void hole(long offset, long length) {
        java.util.Arrays.fill(disk, (int) offset, (int) (offset + length), (byte) 0);
        int first = (int) ((offset + BLOCK - 1) / BLOCK);
        int end = (int) ((offset + length) / BLOCK);
        if (first < end) {
            data.clear(first, end);
        }
    }

    @Override
    public synchronized List<Extent> extents(long offset, long length) {
        List<Extent> out = new ArrayList<>();
        long pos = offset;
        long end = Math.min(offset + length, disk.length);
        while (pos < end) {
            int block = (int) (pos / BLOCK);
            boolean hole = !data.get(block);
            int next = hole ? data.nextSetBit(block) : data.nextClearBit(block);
            long runEnd = next < 0 ? end : Math.min(end, (long) next * BLOCK);
            out.add(new Extent(runEnd - pos, hole));
            pos = runEnd;
        }
        return out;
    }

    @Override
    public void close() {
        closes.incrementAndGet();
    }
}
