package vmfuse.fs.mount;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;

import jnr.ffi.Memory;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import vmfuse.fs.FsException;
import vmfuse.fs.nativeio.LibC;
import vmfuse.fs.nativeio.Native;

/**
 * Checks a mount point before mounting, and recognises a stale mount: one whose daemon died,
 * where every access fails with ENOTCONN ("Transport endpoint is not connected").
 */
public final class MountPoints {
    private MountPoints() {}

    /** What is at a mount point now. */
    public enum State { MISSING, NOT_DIRECTORY, STALE, MOUNTED, NOT_EMPTY, READY }

    public static State probe(Path mnt) throws IOException {
        Pointer st = Memory.allocate(Runtime.getSystemRuntime(), 256);
        if (LibC.INSTANCE.fstatat(-100 /* AT_FDCWD */, mnt.toString(), st, 0) != 0) {
            int errno = Native.errno();
            if (errno == Native.ENOTCONN) {
                return State.STALE;
            }
            if (errno == Native.ENOENT) {
                return State.MISSING;
            }
            throw new IOException(Native.strerror(errno));
        }
        if ((st.getInt(24) & Native.S_IFMT) != Native.S_IFDIR) {
            return State.NOT_DIRECTORY;
        }
        if (MountTable.at(mnt).isPresent()) {
            return State.MOUNTED;
        }
        try (DirectoryStream<Path> d = Files.newDirectoryStream(mnt)) {
            if (d.iterator().hasNext()) {
                return State.NOT_EMPTY;
            }
        }
        return State.READY;
    }

    /**
     * Fails with a one-line reason unless {@code mnt} can take a new mount. With {@code force},
     * a stale vmfuse mount is cleared first (lazy unmount).
     */
    public static void checkMountable(Path mnt, boolean force) throws FsException {
        String m = mnt.toString();
        try {
            State state = probe(mnt);
            if (state == State.STALE && force) {
                Fusermount.unmount(mnt, true);
                state = probe(mnt);
            }
            switch (state) {
                case READY -> { }
                case MISSING -> throw new FsException(Native.ENOENT, "mountpoint " + m + " does not exist");
                case NOT_DIRECTORY -> throw new FsException(Native.ENOTDIR, "mountpoint " + m + " is not a directory");
                case NOT_EMPTY -> throw new FsException(Native.ENOTEMPTY, "mountpoint " + m + " is not empty");
                case STALE -> throw new FsException(Native.EBUSY, "a stale mount is at " + m
                        + " (its daemon is gone); clear it with 'fusermount -u " + m
                        + "' or mount with --force");
                case MOUNTED -> {
                    Optional<MountTable.Entry> e = MountTable.at(mnt);
                    String what = e.map(x -> x.isVmfuse() ? "vmfuse (store " + x.source() + ")" : x.fsType()).orElse("?");
                    throw new FsException(Native.EBUSY, "mountpoint " + m + " is busy: already mounted by " + what);
                }
            }
        } catch (IOException e) {
            throw new FsException(Native.EIO, "cannot inspect mountpoint " + m + ": " + e.getMessage());
        }
    }
}
