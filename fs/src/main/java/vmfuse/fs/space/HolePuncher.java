package vmfuse.fs.space;

import static vmfuse.fs.nativeio.Native.*;

import jnr.ffi.Pointer;
import vmfuse.fs.FsException;
import vmfuse.fs.nativeio.LibC;
import vmfuse.fs.nativeio.Native;
import vmfuse.fs.nativeio.StructStat;

/**
 * The one place that gives backing space back: punches holes and zeroes ranges in backing files,
 * measures what the backing filesystem really released (the drop of st_blocks), and records it
 * in the {@link ReleaseLedger}: for the images' punch, zero and truncate, and for the reclaimer.
 */
public final class HolePuncher {
    private static final LibC C = LibC.INSTANCE;

    private final ReleaseLedger ledger;

    public HolePuncher(ReleaseLedger ledger) {
        this.ledger = ledger;
    }

    /** fallocate(PUNCH_HOLE|KEEP_SIZE): the range reads as zeros and holds no blocks. Returns bytes freed. */
    public long punch(int fd, String image, long offset, long length) throws FsException {
        return punch(fd, image, offset, length, ReleaseLedger.Reason.PUNCH_HOLE);
    }

    /** As {@link #punch(int, String, long, long)}, counted under {@code reason}. */
    public long punch(int fd, String image, long offset, long length, ReleaseLedger.Reason reason) throws FsException {
        long before = usage(fd).allocated();
        if (C.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0) {
            throw FsException.fromErrno(Native.errno(), "punch hole in", image);
        }
        return released(fd, image, offset, length, before, reason);
    }

    /**
     * ZERO_RANGE, done so that the range holds no blocks where the backing filesystem can punch:
     * a punch, then (without KEEP_SIZE) the file grows to cover the range as ZERO_RANGE would.
     * Where the backing filesystem cannot punch, a real ZERO_RANGE. Returns bytes freed.
     */
    public long zeroRange(int fd, String image, long offset, long length, boolean keepSize) throws FsException {
        long before = usage(fd).allocated();
        if (C.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0) {
            if (!keepSize && usage(fd).size() < offset + length
                    && C.ftruncate(fd, offset + length) != 0) {
                throw FsException.fromErrno(Native.errno(), "extend", image);
            }
        } else {
            int err = Native.errno();
            if (err != EOPNOTSUPP) {
                throw FsException.fromErrno(err, "punch hole in", image);
            }
            int mode = FALLOC_FL_ZERO_RANGE | (keepSize ? FALLOC_FL_KEEP_SIZE : 0);
            if (C.fallocate(fd, mode, offset, length) != 0) {
                throw FsException.fromErrno(Native.errno(), "zero range in", image);
            }
        }
        return released(fd, image, offset, length, before, ReleaseLedger.Reason.ZERO_RANGE);
    }

    /**
     * Zeros that keep their space (NBD's WRITE_ZEROES with NO_HOLE): ZERO_RANGE with KEEP_SIZE,
     * which leaves the blocks allocated; where the filesystem has no ZERO_RANGE (tmpfs), a punch
     * and an allocation of the range again. Nothing is released, so nothing is counted.
     */
    public void zeroKeepingSpace(int fd, String image, long offset, long length) throws FsException {
        if (C.fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length) == 0) {
            return;
        }
        int err = Native.errno();
        if (err != EOPNOTSUPP) {
            throw FsException.fromErrno(err, "zero range in", image);
        }
        if (C.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0) {
            throw FsException.fromErrno(Native.errno(), "punch hole in", image);
        }
        if (C.fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) != 0) {
            throw FsException.fromErrno(Native.errno(), "allocate in", image);
        }
    }

    /**
     * Punches a range of a file of the store itself (the journal store's freed pages): false if
     * its filesystem cannot punch.
     */
    public static boolean punchStoreFile(java.nio.file.Path file, long offset, long length) throws java.io.IOException {
        int fd = C.open(file.toString(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0);
        if (fd < 0) {
            throw new java.io.IOException("cannot open " + file + ": " + Native.strerror(Native.errno()));
        }
        try {
            if (C.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0) {
                return true;
            }
            int err = Native.errno();
            if (err == EOPNOTSUPP) {
                return false;
            }
            throw new java.io.IOException("cannot punch " + file + " at " + offset + "+" + length + ": "
                    + Native.strerror(err));
        } finally {
            C.close(fd);
        }
    }

    /** ftruncate, counting what a shrink released. */
    public void truncate(int fd, String image, long size) throws FsException {
        StructStat.Usage before = usage(fd);
        if (C.ftruncate(fd, size) != 0) {
            throw FsException.fromErrno(Native.errno(), "truncate", image);
        }
        if (size < before.size()) {
            released(fd, image, size, before.size() - size, before.allocated(), ReleaseLedger.Reason.TRUNCATE);
        }
    }

    /** Size and allocated bytes of an open descriptor. */
    private static StructStat.Usage usage(int fd) throws FsException {
        Pointer st = StructStat.allocate();
        int rc = StructStat.fstat(fd, st);
        if (rc != 0) {
            throw FsException.fromErrno(-rc, "fstat", "fd " + fd);
        }
        return StructStat.usage(st);
    }

    private long released(int fd, String image, long offset, long length, long before,
            ReleaseLedger.Reason reason) throws FsException {
        long freed = Math.max(0, before - usage(fd).allocated());
        ledger.record(ReleaseLedger.image(image), offset, length, freed, reason);
        return freed;
    }
}
