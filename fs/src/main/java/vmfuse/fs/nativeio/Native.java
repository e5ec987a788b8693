package vmfuse.fs.nativeio;

import jnr.constants.platform.Errno;
import jnr.ffi.LastError;
import jnr.ffi.Runtime;

/** Constants of Linux x86_64 and the errno of the calling thread's last {@link LibC} call. */
public final class Native {
    private Native() {}

    private static final Runtime RUNTIME = Runtime.getRuntime(LibC.INSTANCE);

    /** errno left by the last failed {@link LibC} call on this thread. */
    public static int errno() {
        return LastError.getLastError(RUNTIME);
    }

    // open(2) flags (asm-generic/fcntl.h, x86_64)
    public static final int O_RDONLY = 0;
    public static final int O_WRONLY = 01;
    public static final int O_RDWR = 02;
    public static final int O_ACCMODE = 03;
    public static final int O_CREAT = 0100;
    public static final int O_EXCL = 0200;
    public static final int O_NOCTTY = 0400;
    public static final int O_TRUNC = 01000;
    public static final int O_APPEND = 02000;
    public static final int O_DIRECT = 040000;
    public static final int O_DIRECTORY = 0200000;
    public static final int O_NOFOLLOW = 0400000;
    public static final int O_CLOEXEC = 02000000;
    public static final int O_PATH = 010000000;

    public static final int AT_FDCWD = -100;
    public static final int AT_SYMLINK_NOFOLLOW = 0x100;
    public static final int AT_REMOVEDIR = 0x200;

    // lseek(2) whence for sparse files
    public static final int SEEK_DATA = 3;
    public static final int SEEK_HOLE = 4;

    // fallocate(2) modes (linux/falloc.h)
    public static final int FALLOC_FL_KEEP_SIZE = 0x01;
    public static final int FALLOC_FL_PUNCH_HOLE = 0x02;
    public static final int FALLOC_FL_ZERO_RANGE = 0x10;

    // st_mode
    public static final int S_IFMT = 0170000;
    public static final int S_IFREG = 0100000;
    public static final int S_IFDIR = 0040000;

    // errno values (asm-generic/errno-base.h, errno.h)
    public static final int EPERM = 1;
    public static final int EINTR = 4;
    public static final int ENOENT = 2;
    public static final int EIO = 5;
    public static final int ENXIO = 6;
    public static final int EBADF = 9;
    public static final int EAGAIN = 11;
    public static final int ENOMEM = 12;
    public static final int EACCES = 13;
    public static final int EBUSY = 16;
    public static final int EEXIST = 17;
    public static final int EXDEV = 18;
    public static final int ENOTDIR = 20;
    public static final int EISDIR = 21;
    public static final int EINVAL = 22;
    public static final int EFBIG = 27;
    public static final int ENOSPC = 28;
    public static final int EROFS = 30;
    public static final int ENAMETOOLONG = 36;
    public static final int ENOSYS = 38;
    public static final int ENOTEMPTY = 39;
    public static final int ELOOP = 40;
    public static final int EOPNOTSUPP = 95;
    public static final int ENOTCONN = 107;

    /** The symbolic name of an errno, e.g. "ENOSPC" (the number as text if it has none). */
    public static String errnoName(int errno) {
        Errno e = Errno.valueOf(errno);
        return e == Errno.__UNKNOWN_CONSTANT__ ? String.valueOf(errno) : e.name();
    }

    /** The C library's message for an errno, e.g. "No space left on device". */
    public static String strerror(int errno) {
        return Errno.valueOf(errno).description();
    }

    /** The user name of {@code uid}, or null if it has none (getpwuid, serialized: its result is static). */
    public static synchronized String userName(long uid) {
        jnr.ffi.Pointer pw = LibC.INSTANCE.getpwuid((int) uid);
        if (pw == null) {
            return null;
        }
        jnr.ffi.Pointer name = pw.getPointer(0);
        return name == null ? null : name.getString(0);
    }
}
