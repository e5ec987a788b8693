package vmfuse.fs.volume;

import static vmfuse.fs.nativeio.Native.EFBIG;
import static vmfuse.fs.nativeio.Native.EINVAL;

import java.util.List;

import jnr.ffi.Pointer;
import vmfuse.fs.FsException;

/**
 * One open volume: an image or a journal device, as a door into the daemon (the FUSE mount
 * and the NBD export) has it open. The door only translates its protocol into these
 * calls; what every door must do the same way lives behind them: space given back by punch,
 * zero and truncate is measured and counted (ReleaseLedger), an image's writes are counted by
 * the reclaimer's fence before they land (WriteTracker), a journal device's writes and flushes
 * are as durable as its mode promises. Every failure is an {@link FsException} with the errno
 * the door answers; nothing else is thrown but bugs.
 *
 * <p>A volume is used by many threads at once (the kernel sends concurrent reads and writes on
 * one open file); each implementation is safe for that. {@link #close} ends it.
 */
public sealed interface Volume permits ImageVolume, JournalVolume {

    /**
     * Its name within its kind: an image's path under images/ ("tenant1/vm7/disk.qcow2"), a
     * device's name under journals/. An image and a device may have the same name: a door that
     * serves both keys on the kind too.
     */
    String name();

    /** Reads up to {@code size} bytes at {@code offset} into {@code buf}; fewer only at the end. */
    int read(Pointer buf, long size, long offset) throws FsException;

    /** Writes {@code size} bytes at {@code offset}; returns how many landed (fewer only on a short write). */
    int write(Pointer buf, long size, long offset) throws FsException;

    /** What a close(2) of the backing file would report (a close is not a barrier: {@link #sync} is). */
    void flush() throws FsException;

    /** Everything written so far is on stable storage (data only, or data and metadata). */
    void sync(boolean dataOnly) throws FsException;

    /** Sets the size; a shrink releases the space past the new end, counted. */
    void truncate(long size) throws FsException;

    /** The range reads as zeros and holds no space (a guest's discard); counted. */
    void punch(long offset, long length) throws FsException;

    /** The range reads as zeros, holding no space where it can; grows the volume unless {@code keepSize}. */
    void zero(long offset, long length, boolean keepSize) throws FsException;

    /**
     * The range reads as zeros and keeps (or gets) its space, as NBD's WRITE_ZEROES with NO_HOLE
     * asks: zeros written, nothing released or counted.
     */
    void zeroKeepingSpace(long offset, long length) throws FsException;

    /** Allocates the range (fallocate mode 0 or KEEP_SIZE); grows the volume unless {@code keepSize}. */
    void allocate(long offset, long length, boolean keepSize) throws FsException;

    /** Fills a kernel struct stat (see StructStat) for the volume. */
    void stat(Pointer statbuf) throws FsException;

    /** The volume's size in bytes. */
    long size() throws FsException;

    /**
     * Which parts of {@code [offset, offset + length)} hold data and which are holes (read as
     * zeros and hold no space): consecutive extents from {@code offset}, covering the whole
     * range or only a first part of it (ask again from where they end), none past the end of
     * the volume. A hole is never reported where data is; data may be reported over zeros.
     */
    List<Extent> extents(long offset, long length) throws FsException;

    /** Ends this open: its descriptor or handle is given back. Called once. */
    void close() throws FsException;

    /** What the owner of a volume's table does when one of its volumes is closed. */
    @FunctionalInterface
    interface OnClose<V extends Volume> {
        void closed(V volume) throws FsException;
    }

    /** Checks a range's bounds as every door must: EINVAL for a negative one, EFBIG past 2^63. */
    static void checkRange(long offset, long length) throws FsException {
        if (offset < 0 || length < 0) {
            throw new FsException(EINVAL, "bad range offset=" + offset + " length=" + length);
        }
        if (offset > Long.MAX_VALUE - length) {
            throw new FsException(EFBIG, "range past 2^63: offset=" + offset
                    + " length=" + length);
        }
    }
}
