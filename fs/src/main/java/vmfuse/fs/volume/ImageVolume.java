package vmfuse.fs.volume;

import static vmfuse.fs.nativeio.Native.*;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Function;

import jnr.ffi.Pointer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import vmfuse.fs.FsException;
import vmfuse.fs.nativeio.LibC;
import vmfuse.fs.nativeio.Native;
import vmfuse.fs.nativeio.StructStat;
import vmfuse.fs.space.HolePuncher;
import vmfuse.reclaimer.WriteTracker;

/**
 * An open image: the backing descriptor it keeps for its life, as libfuse's passthrough_hp keeps
 * it in fi->fh. A read is one pread and a write one pwrite straight between the caller's buffer
 * and the backing file, so operations on an open (even unlinked) image never look up a path.
 * A write to an image a VM's reclaimer watches is counted by its {@link WriteTracker} first (the
 * reclaimer's fence); punch, zero and truncate go through the {@link HolePuncher}, which
 * measures and counts what the backing filesystem gave back.
 */
public final class ImageVolume implements Volume {
    private static final Logger log = LoggerFactory.getLogger(ImageVolume.class);
    private static final LibC C = LibC.INSTANCE;
    /** An extents answer describes at most this many runs (the caller asks again from its end). */
    private static final int MAX_EXTENTS = 1024;

    private final int fd;
    private final HolePuncher puncher;
    private final Function<String, WriteTracker> trackers;
    private final OnClose<ImageVolume> onClose;
    private volatile String name;
    private volatile boolean unlinked;
    /** The door this open writes the image through, once it may (ImageFiles#claimWriter); null: it reads. */
    private volatile Door writer;
    private final AtomicBoolean closed = new AtomicBoolean();

    /**
     * An open of image {@code name} on backing descriptor {@code fd} (owned from here on). Writes
     * go through {@code trackers.apply(name)} where that is not null; {@code onClose} runs after
     * the descriptor is closed.
     */
    public ImageVolume(int fd, String name, HolePuncher puncher, Function<String, WriteTracker> trackers,
            OnClose<ImageVolume> onClose) {
        this.fd = fd;
        this.name = name;
        this.puncher = puncher;
        this.trackers = trackers;
        this.onClose = onClose;
    }

    @Override
    public String name() {
        return name;
    }

    /** The image was renamed (or hidden): counts and logs follow it. */
    public void renamed(String to) {
        name = to;
    }

    /** Unlinked, or replaced by a rename, while open: it no longer has a name in the store. */
    public boolean unlinked() {
        return unlinked;
    }

    public void markUnlinked() {
        unlinked = true;
    }

    public Door writer() {
        return writer;
    }

    /** The backing file this open is of (st_dev, st_ino): the same across renames, and after an unlink. */
    public StructStat.FileId fileId() throws FsException {
        Pointer st = StructStat.allocate();
        stat(st);
        return StructStat.fileId(st);
    }

    /** Set by ImageFiles, which checks that no open of the other door writes the image. */
    public void writer(Door door) {
        writer = door;
    }

    /** The backing descriptor, for a door that can splice from it (FUSE's read_buf). */
    public int fd() {
        return fd;
    }

    /**
     * preads until {@code size} bytes or the end. An error fails the whole read, after some bytes
     * too: a read short of its size means the end (Volume#read), and FUSE's page cache and the NBD
     * door both fill the rest with zeros (a disk error part way reached the guest as zeros with
     * success; found by a review).
     */
    @Override
    public int read(Pointer buf, long size, long offset) throws FsException {
        Volume.checkRange(offset, size);
        long done = 0;
        while (done < size) {
            long n = C.pread(fd, buf.slice(done), size - done, offset + done);
            if (n < 0) {
                int errno = Native.errno();
                throw new FsException(errno, "read image=" + name + " offset=" + offset + " size=" + size + ": "
                        + strerror(errno));
            }
            if (n == 0) {
                break;
            }
            done += n;
        }
        return (int) done;
    }

    /** pwrites until all of it landed, counted first by the reclaimer's fence if a VM's reclaimer watches the image. */
    @Override
    public int write(Pointer buf, long size, long offset) throws FsException {
        Volume.checkRange(offset, size);
        WriteTracker t = trackers.apply(name);
        if (t == null) {
            return pwrite(buf, size, offset);
        }
        try {
            t.beginWrite(offset, size);
            return pwrite(buf, size, offset);
        } catch (IOException e) {
            throw new FsException(EIO, "write image=" + name + " offset=" + offset + " size=" + size
                    + ": the reclaimer could not record that the write lands on ranges waiting to be punched: "
                    + e.getMessage());
        } finally {
            t.endWrite();
        }
    }

    private int pwrite(Pointer buf, long size, long offset) throws FsException {
        long done = 0;
        while (done < size) {
            long n = C.pwrite(fd, buf.slice(done), size - done, offset + done);
            if (n <= 0) {
                int errno = n < 0 ? Native.errno() : EIO;
                if (done > 0) {
                    break; // a short write: the writer sees how much landed, then the error on its retry
                }
                throw new FsException(errno, "write image=" + name + " offset=" + offset + " size=" + size + ": "
                        + (errno == ENOSPC ? "the backing store is full" : strerror(errno)));
            }
            done += n;
        }
        return (int) done;
    }

    /** close(dup(fd)): reports what a close of the backing file would (as passthrough_hp does). */
    @Override
    public void flush() throws FsException {
        int dup = C.dup(fd);
        if (dup < 0 || C.close(dup) != 0) {
            throw FsException.fromErrno(Native.errno(), "flush", name);
        }
    }

    @Override
    public void sync(boolean dataOnly) throws FsException {
        if ((dataOnly ? C.fdatasync(fd) : C.fsync(fd)) != 0) {
            throw FsException.fromErrno(Native.errno(), dataOnly ? "fdatasync" : "fsync", name);
        }
    }

    @Override
    public void truncate(long size) throws FsException {
        Volume.checkRange(size, 0);
        puncher.truncate(fd, name, size);
    }

    @Override
    public void punch(long offset, long length) throws FsException {
        Volume.checkRange(offset, length);
        puncher.punch(fd, name, offset, length);
    }

    @Override
    public void zero(long offset, long length, boolean keepSize) throws FsException {
        Volume.checkRange(offset, length);
        puncher.zeroRange(fd, name, offset, length, keepSize);
    }

    @Override
    public void zeroKeepingSpace(long offset, long length) throws FsException {
        Volume.checkRange(offset, length);
        puncher.zeroKeepingSpace(fd, name, offset, length);
    }

    @Override
    public void allocate(long offset, long length, boolean keepSize) throws FsException {
        Volume.checkRange(offset, length);
        if (C.fallocate(fd, keepSize ? FALLOC_FL_KEEP_SIZE : 0, offset, length) != 0) {
            throw FsException.fromErrno(Native.errno(), "fallocate", name);
        }
    }

    /** fstat of the backing descriptor (also after the image was unlinked). */
    @Override
    public void stat(Pointer statbuf) throws FsException {
        int rc = StructStat.fstat(fd, statbuf);
        if (rc != 0) {
            throw FsException.fromErrno(-rc, "fstat", name);
        }
    }

    @Override
    public long size() throws FsException {
        Pointer st = StructStat.allocate();
        stat(st);
        return StructStat.usage(st).size();
    }

    /** SEEK_DATA and SEEK_HOLE on the backing file: its filesystem's own map of what holds blocks. */
    @Override
    public List<Extent> extents(long offset, long length) throws FsException {
        Volume.checkRange(offset, length);
        long end = Math.min(offset + length, size());
        List<Extent> out = new ArrayList<>();
        long pos = offset;
        while (pos < end && out.size() < MAX_EXTENTS) {
            long data = C.lseek(fd, pos, SEEK_DATA);
            if (data < 0) {
                int errno = Native.errno();
                if (errno != ENXIO) { // ENXIO: no data at or after pos
                    throw FsException.fromErrno(errno, "lseek SEEK_DATA in", name);
                }
                data = end;
            }
            data = Math.min(data, end);
            if (data > pos) {
                out.add(new Extent(pos, data - pos, false));
                pos = data;
                continue;
            }
            long hole = C.lseek(fd, pos, SEEK_HOLE);
            if (hole < 0) {
                throw FsException.fromErrno(Native.errno(), "lseek SEEK_HOLE in", name);
            }
            hole = Math.min(Math.max(hole, pos + 1), end);
            out.add(new Extent(pos, hole - pos, true));
            pos = hole;
        }
        return out;
    }

    /**
     * Closes the descriptor, once: a second close (an unmount's closeAll racing a door's own close)
     * does nothing, so it cannot close a descriptor number reused since.
     */
    @Override
    public void close() throws FsException {
        if (closed.getAndSet(true)) {
            return;
        }
        try {
            if (C.close(fd) != 0) {
                throw FsException.fromErrno(Native.errno(), "close", name);
            }
            if (unlinked) {
                log.debug("closed unlinked image={}", name);
            }
        } finally {
            onClose.closed(this);
        }
    }
}
