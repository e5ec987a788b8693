package vmfuse.nbd;

import java.nio.ByteBuffer;
import java.util.List;

/**
 * What an NBD client has open: a disk of {@link #size} bytes. The server calls it from several
 * threads at once (the scheduler's workers, and the connection's own for a request alone), with
 * requests of one connection in flight together; several connections may have the same disk
 * open, each through its own Export. Every failure is an {@link ExportException} carrying an errno, which the server maps to
 * the protocol's errors.
 */
public interface Export extends AutoCloseable {

    long size() throws ExportException;

    /** Whether every connection to this disk sees one view: a flush on one covers writes made on all. */
    boolean multiConn();

    /** Fills {@code dst} (its remaining bytes) from {@code offset}; past the end is the server's to refuse. */
    void read(long offset, ByteBuffer dst) throws ExportException;

    /** Writes {@code src} (its remaining bytes) at {@code offset}, all of it. */
    void write(long offset, ByteBuffer src) throws ExportException;

    /** Everything written so far is on stable storage. */
    void flush() throws ExportException;

    /** The range need not hold data any more (a guest's discard): it may read as anything after. */
    void trim(long offset, long length) throws ExportException;

    /** The range reads as zeros; holding no space unless {@code noHole}. */
    void zero(long offset, long length, boolean noHole) throws ExportException;

    /** A run of the disk that holds data, or a hole that reads as zeros. */
    record Extent(long length, boolean hole) {}

    /**
     * Consecutive extents from {@code offset} that cover {@code [offset, offset + length)} or a
     * first part of it (at least one byte), none past the end.
     */
    List<Extent> extents(long offset, long length) throws ExportException;

    @Override
    void close();
}
