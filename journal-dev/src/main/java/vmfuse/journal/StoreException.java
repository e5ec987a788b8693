package vmfuse.journal;

/**
 * The one error type of the journal-dev module: a failure with the errno it maps to (EINVAL for
 * a bad range, EFBIG past 2^63, ENOSPC for a full store, EIO for a corrupt one). The fs module
 * returns {@code -errno()} to the kernel.
 */
public final class StoreException extends Exception {
    public static final int EIO = 5;
    public static final int EINVAL = 22;
    public static final int EFBIG = 27;
    public static final int ENOSPC = 28;

    private final int errno;

    public StoreException(int errno, String message) {
        super(message);
        this.errno = errno;
    }

    public StoreException(int errno, String message, Throwable cause) {
        super(message, cause);
        this.errno = errno;
    }

    /** ENOSPC for an I/O error of a full disk (Java names it only in the message), EIO otherwise. */
    static int errno(java.io.IOException e) {
        String m = e.getMessage();
        return m != null && (m.contains("No space left") || m.contains("Disk quota exceeded")) ? ENOSPC : EIO;
    }

    public int errno() {
        return errno;
    }
}
