package vmfuse.fs.volume;

import static vmfuse.fs.nativeio.Native.EBADF;
import static vmfuse.fs.nativeio.Native.EINVAL;

import java.util.ArrayList;
import java.util.List;

import com.kenai.jffi.MemoryIO;

import jnr.ffi.Pointer;
import vmfuse.fs.FsException;
import vmfuse.fs.nativeio.StructStat;
import vmfuse.fs.space.ReleaseLedger;
import vmfuse.journal.JournalDevice;
import vmfuse.journal.StoreException;

/**
 * An open journal device: reads and writes go through the device (its blocks in memory until a
 * checkpoint, its redo log for a FLUSH device), sync is the device's flush, punch and zero free
 * its blocks and are counted in the {@link ReleaseLedger} under its name there. Its stat is a
 * regular file (root's, 0600, when made; chown and chmod change that), whose size is the device's
 * and whose st_blocks counts the blocks it really holds.
 */
public final class JournalVolume implements Volume {
    private static final int BLOCK = 4096;
    /** An extents answer looks at most this many blocks (64 MiB) before it answers. */
    private static final long EXTENTS_BLOCKS = 16384;

    private final JournalDevice device;
    private final ReleaseLedger ledger;
    private final OnClose<JournalVolume> onClose;
    private volatile boolean closed;

    /** An open of {@code device}; {@code onClose} runs when it is closed (its last close persists a CLOSE device). */
    public JournalVolume(JournalDevice device, ReleaseLedger ledger, OnClose<JournalVolume> onClose) {
        this.device = device;
        this.ledger = ledger;
        this.onClose = onClose;
    }

    public JournalDevice device() {
        return device;
    }

    @Override
    public String name() {
        return device.name();
    }

    static FsException fail(StoreException e) {
        return new FsException(e.errno(), e.getMessage());
    }

    /**
     * Each thread's buffer between the caller's bytes and the device's (a FUSE request is at most
     * max_read or max_write, 128 KiB by default): a new array per request was 512 MiB of garbage
     * per 512 MiB written, and collections that stopped every FUSE thread.
     */
    private static final ThreadLocal<byte[]> BUFFER = ThreadLocal.withInitial(() -> new byte[128 << 10]);

    private static byte[] buffer(long size) throws FsException {
        if (size > Integer.MAX_VALUE - 8) {
            throw new FsException(EINVAL, "request of " + size + " bytes");
        }
        byte[] b = BUFFER.get();
        if (b.length < size) {
            b = new byte[(int) size];
            BUFFER.set(b);
        }
        return b;
    }

    @Override
    public int read(Pointer buf, long size, long offset) throws FsException {
        Volume.checkRange(offset, size);
        byte[] b = buffer(size);
        try {
            int n = device.read(offset, b, 0, (int) size);
            buf.put(0, b, 0, n);
            return n;
        } catch (StoreException e) {
            throw fail(e);
        }
    }

    @Override
    public int write(Pointer buf, long size, long offset) throws FsException {
        Volume.checkRange(offset, size);
        try {
            if (buf.isDirect() && buf.address() != 0 && size <= Integer.MAX_VALUE - 8) {
                // FUSE's request buffer and the NBD door's are native memory: the device copies from
                // them once, through a view of them that does not outlive this call
                device.write(offset, MemoryIO.getInstance().newDirectByteBuffer(buf.address(), (int) size), 0,
                        (int) size);
                return (int) size;
            }
            byte[] b = buffer(size);
            buf.get(0, b, 0, (int) size);
            device.write(offset, b, 0, (int) size);
            return (int) size;
        } catch (StoreException e) {
            throw fail(e);
        }
    }

    /** close(2) is not a barrier for a device; sync is. */
    @Override
    public void flush() {
    }

    /** The device's flush (for FLUSH devices, a sync of the redo log). */
    @Override
    public void sync(boolean dataOnly) throws FsException {
        try {
            device.flush();
        } catch (StoreException e) {
            throw fail(e);
        }
    }

    @Override
    public void truncate(long size) throws FsException {
        Volume.checkRange(size, 0);
        truncate(device, size, ledger);
    }

    /** Sets a device's size (also by path, without an open); a shrink's freed blocks are counted. */
    public static void truncate(JournalDevice d, long size, ReleaseLedger ledger) throws FsException {
        long before = d.bytesStored();
        long oldSize = d.size();
        try {
            d.truncate(size);
        } catch (StoreException e) {
            throw fail(e);
        }
        if (size < oldSize) {
            ledger.record(ReleaseLedger.device(d.name()), size, oldSize - size, before - d.bytesStored(),
                    ReleaseLedger.Reason.TRUNCATE);
        }
    }

    @Override
    public void punch(long offset, long length) throws FsException {
        free(offset, length, ReleaseLedger.Reason.PUNCH_HOLE);
    }

    @Override
    public void zero(long offset, long length, boolean keepSize) throws FsException {
        free(offset, length, ReleaseLedger.Reason.ZERO_RANGE);
        if (!keepSize) {
            grow(offset + length);
        }
    }

    private void free(long offset, long length, ReleaseLedger.Reason reason) throws FsException {
        Volume.checkRange(offset, length);
        long before = device.bytesStored();
        try {
            device.zero(offset, length);
        } catch (StoreException e) {
            throw fail(e);
        }
        ledger.record(ReleaseLedger.device(device.name()), offset, length, before - device.bytesStored(), reason);
    }

    /** A device's blocks are its data: zeros kept are zeros stored, which the store keeps as none. */
    @Override
    public void zeroKeepingSpace(long offset, long length) throws FsException {
        zero(offset, length, true);
    }

    /** A device has no allocation to make: only the size, unless {@code keepSize}. */
    @Override
    public void allocate(long offset, long length, boolean keepSize) throws FsException {
        Volume.checkRange(offset, length);
        if (!keepSize) {
            grow(offset + length);
        }
    }

    private void grow(long end) throws FsException {
        if (end > device.size()) {
            try {
                device.truncate(end);
            } catch (StoreException e) {
                throw fail(e);
            }
        }
    }

    @Override
    public void stat(Pointer statbuf) {
        stat(device, statbuf);
    }

    /** Fills a struct stat for a device (also by path, without an open). */
    public static void stat(JournalDevice d, Pointer statbuf) {
        JournalDevice.Owner o = d.owner();
        StructStat.fillRegular(statbuf, o.mode(), d.size(), d.bytesStored(), Math.max(d.created(), d.lastFlush()));
        StructStat.owner(statbuf, o.uid(), o.gid());
    }

    @Override
    public long size() {
        return device.size();
    }

    /** Per block: what the device holds in memory or in its store, without reading a byte. */
    @Override
    public List<Extent> extents(long offset, long length) throws FsException {
        Volume.checkRange(offset, length);
        long end = Math.min(offset + length, device.size());
        List<Extent> out = new ArrayList<>();
        long pos = offset;
        long budget = EXTENTS_BLOCKS;
        while (pos < end && budget > 0) {
            long block = pos / BLOCK;
            long run;
            try {
                run = device.dataRun(block, budget);
            } catch (StoreException e) {
                throw fail(e);
            }
            long endBlock = block + Math.abs(run); // in blocks: a byte offset could pass 2^63 at the last one
            long runEnd = endBlock > (end - 1) / BLOCK ? end : endBlock * BLOCK;
            boolean data = run > 0;
            if (!out.isEmpty() && out.get(out.size() - 1).data() == data) {
                Extent last = out.remove(out.size() - 1);
                out.add(new Extent(last.offset(), runEnd - last.offset(), data));
            } else {
                out.add(new Extent(pos, runEnd - pos, data));
            }
            budget -= Math.abs(run);
            pos = runEnd;
        }
        return out;
    }

    @Override
    public void close() throws FsException {
        if (closed) {
            throw new FsException(EBADF, "journal device " + device.name() + " closed twice");
        }
        closed = true;
        onClose.closed(this);
    }
}
