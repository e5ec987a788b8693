package vmfuse.journal;

/**
 * The one error type of the journal-dev module: a failure with the errno it maps to (EINVAL for
 * a bad range, EFBIG past 2^63, ENOSPC for a full store, EIO for a corrupt one, ENOENT and EEXIST
 * for device names), its errno table. The fs module
 * returns {@code -errno()} to the kernel.
 */
public final class StoreException extends Exception {
    public static final int ENOENT = 2;
    public static final int EIO = 5;
    public static final int ENOMEM = 12;
    public static final int EEXIST = 17;
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

    /**
     * ENOSPC for a failure a full disk caused (Java names it only in a message, and MapDB wraps
     * the IOException in its own), EIO otherwise.
     */
    static int errno(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            String m = t.getMessage();
            if (m != null && (m.contains("No space left") || m.contains("Disk quota exceeded"))) {
                return ENOSPC;
            }
        }
        return EIO;
    }

    public int errno() {
        return errno;
    }
}
