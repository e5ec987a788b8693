package vmfuse.durable;

import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * A file of a {@link Disk}, open for reading and writing at positions (no file pointer). What a
 * write puts in it is durable only after {@link #force} returns; a power cut may keep any part of
 * what was written since, down to a torn page.
 */
public interface DiskFile extends AutoCloseable {
    /** Reads into {@code dst} at {@code pos}; the bytes read, -1 at the end (pread). */
    int read(ByteBuffer dst, long pos) throws IOException;

    /** Writes part or all of {@code src} at {@code pos}; the bytes written (pwrite: it may be short). */
    int write(ByteBuffer src, long pos) throws IOException;

    /** fdatasync ({@code metadata} false) or fsync: everything written so far survives a power cut. */
    void force(boolean metadata) throws IOException;

    /** Cuts the file to {@code size} bytes if it is longer (ftruncate; durable after a force). */
    void truncate(long size) throws IOException;

    long size() throws IOException;

    /**
     * Frees [offset, offset + length) (fallocate PUNCH_HOLE|KEEP_SIZE): it reads as zeros. False if
     * the file's filesystem cannot punch; the caller then writes zeros.
     */
    boolean punch(long offset, long length) throws IOException;

    @Override
    void close() throws IOException;

    /** Writes all of {@code src} at {@code pos}, however many calls it takes. */
    default void writeFully(ByteBuffer src, long pos) throws IOException {
        while (src.hasRemaining()) {
            pos += write(src, pos);
        }
    }

    /** Fills {@code dst} from {@code pos}; false if the file ends first (what was read stays in dst). */
    default boolean readFully(ByteBuffer dst, long pos) throws IOException {
        while (dst.hasRemaining()) {
            int n = read(dst, pos);
            if (n < 0) {
                return false;
            }
            pos += n;
        }
        return true;
    }
}
