package vmfuse.fs;

import vmfuse.fs.nativeio.Native;

/**
 * The one error type of the fs module: a failure that maps to an errno. FUSE callbacks return
 * {@code -errno()}; the command line prints {@link #getMessage()} on one line.
 */
public final class FsException extends Exception {
    private final int errno;

    public FsException(int errno, String message) {
        super(message);
        this.errno = errno;
    }

    /** A failed libc call: the message names the call, what it was applied to, and the C library's reason. */
    public static FsException fromErrno(int errno, String call, String what) {
        return new FsException(errno, call + " " + what + ": " + Native.strerror(errno));
    }

    public int errno() {
        return errno;
    }
}
