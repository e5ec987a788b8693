package vmfuse.nbd;

/** The one error type of the nbd module: a failure of an export, with the errno it maps to. */
public final class ExportException extends Exception {
    private final int errno;

    public ExportException(int errno, String message) {
        super(message);
        this.errno = errno;
    }

    public int errno() {
        return errno;
    }
}
