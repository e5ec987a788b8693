package vmfuse.durable;

import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * A file's page handle ({@link Disk#openForPageWrites}) opened with O_DIRECT, on a filesystem
 * that may take O_DIRECT at open and refuse its writes (EINVAL: a block size above 4 KiB): the
 * write it refuses, and every one after it, goes through a plain handle of the file (the page
 * cache) instead. Written once here for whoever writes pages (the journal's blocks file, the
 * fresh pages of its index), each of which had its own copy of this fallback.
 *
 * <p>Writers may share it: the switch is made once, and a write whose handle another writer's
 * refusal closed under it goes through the plain handle too. A force, truncate or size racing
 * the switch may fail on the closed handle (no caller does them beside a write that may be
 * refused: the blocks file does all under its monitor, AtomicVolume's sync waits for its
 * writer's hand-off first).
 */
public final class PageWrites implements DiskFile {
    /** Opens the plain handle, at the first write O_DIRECT refused. */
    @FunctionalInterface
    public interface Opener {
        DiskFile open() throws IOException;
    }

    private final Opener plain;
    /** The O_DIRECT handle; null once a write was refused through it. */
    private volatile DiskFile direct;
    /** The plain handle, once needed. */
    private volatile DiskFile fallback;
    private boolean closed; // guarded by this

    /** Writes through {@code direct} (the O_DIRECT handle) until it refuses one; then through what {@code plain} opens. */
    public PageWrites(DiskFile direct, Opener plain) {
        this.direct = direct;
        this.plain = plain;
    }

    /** Whether writes now go through the page cache. */
    public boolean fellBack() {
        return direct == null;
    }

    @Override
    public int write(ByteBuffer src, long pos) throws IOException {
        DiskFile d = direct;
        if (d != null) {
            int at = src.position();
            try {
                return d.write(src, pos);
            } catch (IOException e) {
                if (direct == d && !"Invalid argument".equals(e.getMessage())) {
                    throw e;
                }
                // refused (a refused write took nothing), or another writer's refusal closed d
                // under this one (ClosedChannelException): through the plain handle
                src.position(at);
                refused(d);
            }
        }
        return handle().write(src, pos);
    }

    private synchronized void refused(DiskFile d) throws IOException {
        if (direct == d) {
            if (fallback == null) {
                fallback = plain.open(); // if it fails, the next write tries O_DIRECT again
            }
            direct = null;
            try {
                d.close();
            } catch (IOException e) {
                // nothing was written through it that a close could lose: its writes were direct
            }
        }
    }

    /** The handle writes go through now. */
    private DiskFile handle() throws IOException {
        DiskFile d = direct;
        if (d != null) {
            return d;
        }
        synchronized (this) {
            if (closed) {
                throw new java.nio.channels.ClosedChannelException();
            }
            if (fallback == null) {
                fallback = plain.open();
            }
            return fallback;
        }
    }

    @Override
    public int read(ByteBuffer dst, long pos) throws IOException {
        return handle().read(dst, pos);
    }

    @Override
    public void force(boolean metadata) throws IOException {
        handle().force(metadata);
    }

    @Override
    public void truncate(long size) throws IOException {
        handle().truncate(size);
    }

    @Override
    public long size() throws IOException {
        return handle().size();
    }

    @Override
    public boolean punch(long offset, long length) throws IOException {
        return handle().punch(offset, length);
    }

    @Override
    public synchronized void close() throws IOException {
        closed = true;
        IOException first = null;
        for (DiskFile f : new DiskFile[] {direct, fallback}) {
            if (f != null) {
                try {
                    f.close();
                } catch (IOException e) {
                    if (first == null) {
                        first = e;
                    }
                }
            }
        }
        direct = null;
        fallback = null;
        if (first != null) {
            throw first;
        }
    }
}
