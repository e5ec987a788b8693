package vmfuse.fs.images;

import static vmfuse.fs.nativeio.Native.*;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import jnr.ffi.Memory;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import vmfuse.fs.nativeio.LibC;
import vmfuse.fs.nativeio.Native;
import vmfuse.fs.FsException;
import vmfuse.fs.Node;

/**
 * The backing directory of the images, STORE/images, and the one place that opens, stats,
 * renames and removes its files.
 *
 * <p>Every call is relative to a directory descriptor held for the life of the mount
 * ({@code openat}, {@code fstatat}, ...), with names already checked by {@link Node}, and never
 * follows a symlink: an entry of the backing directory that is not a regular file is not shown
 * and cannot be opened, so nothing placed there can redirect a write outside the store.
 */
public final class BackingStore implements AutoCloseable {
    private static final LibC C = LibC.INSTANCE;
    /** sizeof(struct stat) on x86_64 is 144; a little headroom. */
    private static final int STAT_SIZE = 256;
    private static final int ST_MODE_OFFSET = 24;
    private static final int ST_SIZE_OFFSET = 48;
    private static final int ST_BLOCKS_OFFSET = 64;

    private final Path imagesDir;
    private final int dirFd;

    private BackingStore(Path imagesDir, int dirFd) {
        this.imagesDir = imagesDir;
        this.dirFd = dirFd;
    }

    /** Opens STORE/images, which must exist and be a directory. */
    public static BackingStore open(Path imagesDir) throws FsException {
        int fd = C.open(imagesDir.toString(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (fd < 0) {
            throw FsException.fromErrno(Native.errno(), "open", imagesDir.toString());
        }
        return new BackingStore(imagesDir, fd);
    }

    public Path imagesDir() {
        return imagesDir;
    }

    /**
     * Opens an existing image for I/O. O_DIRECT is stripped (FUSE's buffers are not aligned, see
     * README "cache=none"); O_CREAT/O_EXCL/O_TRUNC are the kernel's business on open and dropped;
     * O_NOFOLLOW and O_CLOEXEC are added. Returns the backing descriptor.
     */
    public int openImage(String name, int flags) throws FsException {
        int backing = (flags & ~(O_DIRECT | O_CREAT | O_EXCL | O_NOCTTY)) | O_NOFOLLOW | O_CLOEXEC;
        int fd = C.openat(dirFd, name, backing, 0);
        if (fd < 0) {
            throw FsException.fromErrno(Native.errno(), "open", name);
        }
        return checkRegular(fd, name);
    }

    /** Creates an image (or opens it, as open(2) with O_CREAT does) and returns the backing descriptor. */
    public int createImage(String name, int flags, int mode) throws FsException {
        int backing = (flags & ~(O_DIRECT | O_NOCTTY)) | O_CREAT | O_NOFOLLOW | O_CLOEXEC;
        int fd = C.openat(dirFd, name, backing, mode & 07777);
        if (fd < 0) {
            throw FsException.fromErrno(Native.errno(), "create", name);
        }
        return checkRegular(fd, name);
    }

    private int checkRegular(int fd, String name) throws FsException {
        Pointer st = Memory.allocate(Runtime.getSystemRuntime(), STAT_SIZE);
        if (C.fstat(fd, st) != 0 || (st.getInt(ST_MODE_OFFSET) & S_IFMT) != S_IFREG) {
            C.close(fd);
            throw new FsException(EACCES, "not a regular file in the store: " + name);
        }
        return fd;
    }

    /** Fills the kernel struct stat at {@code statbuf} for an image; ENOENT for anything not a regular file. */
    public void statImage(String name, Pointer statbuf) throws FsException {
        if (C.fstatat(dirFd, name, statbuf, AT_SYMLINK_NOFOLLOW) != 0) {
            throw FsException.fromErrno(Native.errno(), "stat", name);
        }
        if ((statbuf.getInt(ST_MODE_OFFSET) & S_IFMT) != S_IFREG) {
            throw new FsException(ENOENT, "not a regular file in the store: " + name);
        }
    }

    /** Whether an image (a regular file) of that name is in the store. */
    public boolean exists(String name) {
        return usage(name) != null;
    }

    /** Fills a struct stat for the images directory itself. */
    public void statDir(Pointer statbuf) throws FsException {
        if (C.fstat(dirFd, statbuf) != 0) {
            throw FsException.fromErrno(Native.errno(), "stat", imagesDir.toString());
        }
    }

    /** Size and allocated bytes of an image, or null if it does not exist. */
    public Usage usage(String name) {
        Pointer st = Memory.allocate(Runtime.getSystemRuntime(), STAT_SIZE);
        if (C.fstatat(dirFd, name, st, AT_SYMLINK_NOFOLLOW) != 0
                || (st.getInt(ST_MODE_OFFSET) & S_IFMT) != S_IFREG) {
            return null;
        }
        return new Usage(st.getLong(ST_SIZE_OFFSET), st.getLong(ST_BLOCKS_OFFSET) * 512);
    }

    /** Size and allocated bytes of an open backing descriptor. */
    public static Usage usage(int fd) throws FsException {
        Pointer st = Memory.allocate(Runtime.getSystemRuntime(), STAT_SIZE);
        if (C.fstat(fd, st) != 0) {
            throw FsException.fromErrno(Native.errno(), "fstat", "fd " + fd);
        }
        return new Usage(st.getLong(ST_SIZE_OFFSET), st.getLong(ST_BLOCKS_OFFSET) * 512);
    }

    /** Byte size and bytes allocated on the backing filesystem (st_blocks * 512). */
    public record Usage(long size, long allocated) {}

    /** The images: the regular files in the images directory, sorted, hidden ones left out. */
    public List<String> list() throws FsException {
        return list(false);
    }

    /**
     * The regular files in the images directory, sorted: the hidden ones only (libfuse's names for
     * open images unlinked or replaced, see VmFuseFs), or every other.
     */
    public List<String> list(boolean hidden) throws FsException {
        List<String> names = new ArrayList<>();
        try (DirectoryStream<Path> dir = Files.newDirectoryStream(imagesDir)) {
            for (Path p : dir) {
                String name = p.getFileName().toString();
                if (Files.isRegularFile(p, java.nio.file.LinkOption.NOFOLLOW_LINKS)
                        && name.startsWith(Node.HIDDEN_PREFIX) == hidden) {
                    names.add(name);
                }
            }
        } catch (IOException e) {
            throw new FsException(EIO, "cannot list " + imagesDir + ": " + e.getMessage());
        }
        names.sort(null);
        return names;
    }

    public void unlink(String name) throws FsException {
        if (C.unlinkat(dirFd, name, 0) != 0) {
            throw FsException.fromErrno(Native.errno(), "unlink", name);
        }
    }

    /** fsync of STORE/images: every create, rename and unlink of an image so far survives a host crash. */
    public void syncDir() throws FsException {
        if (C.fsync(dirFd) != 0) {
            throw FsException.fromErrno(Native.errno(), "fsync", imagesDir.toString());
        }
    }

    public void rename(String from, String to) throws FsException {
        if (C.renameat(dirFd, from, dirFd, to) != 0) {
            throw FsException.fromErrno(Native.errno(), "rename", from + " to " + to);
        }
    }

    public void chmod(String name, int mode) throws FsException {
        statImage(name, Memory.allocate(Runtime.getSystemRuntime(), STAT_SIZE));
        if (C.fchmodat(dirFd, name, mode & 07777, 0) != 0) {
            throw FsException.fromErrno(Native.errno(), "chmod", name);
        }
    }

    /** chmod and chown of STORE/images itself (who may create images). */
    public void chmodDir(int mode) throws FsException {
        if (C.fchmod(dirFd, mode & 07777) != 0) {
            throw FsException.fromErrno(Native.errno(), "chmod", imagesDir.toString());
        }
    }

    public void chownDir(int uid, int gid) throws FsException {
        if (C.fchown(dirFd, uid, gid) != 0) {
            throw FsException.fromErrno(Native.errno(), "chown", imagesDir.toString());
        }
    }

    public void chown(String name, int uid, int gid) throws FsException {
        if (C.fchownat(dirFd, name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
            throw FsException.fromErrno(Native.errno(), "chown", name);
        }
    }

    /** Sets atime and mtime from a struct timespec[2] (UTIME_NOW and UTIME_OMIT pass through). */
    public void utimens(String name, Pointer times) throws FsException {
        if (C.utimensat(dirFd, name, times, AT_SYMLINK_NOFOLLOW) != 0) {
            throw FsException.fromErrno(Native.errno(), "utimens", name);
        }
    }

    /** Fills a struct statvfs with the backing filesystem's figures. */
    public void statfs(Pointer statvfsbuf) throws FsException {
        if (C.fstatvfs(dirFd, statvfsbuf) != 0) {
            throw FsException.fromErrno(Native.errno(), "statvfs", imagesDir.toString());
        }
    }

    /** syncfs(2) on the backing filesystem: everything written through the mount reaches stable storage. */
    public void syncAll() throws FsException {
        if (C.syncfs(dirFd) != 0) {
            throw FsException.fromErrno(Native.errno(), "syncfs", imagesDir.toString());
        }
    }

    @Override
    public void close() {
        C.close(dirFd);
    }
}
