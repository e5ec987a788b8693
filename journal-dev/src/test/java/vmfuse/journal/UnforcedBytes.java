package vmfuse.journal;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.function.Predicate;

import vmfuse.durable.Disk;
import vmfuse.durable.DiskFile;
import vmfuse.durable.RealDisk;

/**
 * A disk that counts, per file (whichever handle wrote them), the bytes written since its last
 * force, and keeps the most any file had: what a flush of the same disk would have waited behind.
 */
final class UnforcedBytes implements Disk {
    private final Disk real = RealDisk.of(null);
    private final Map<Path, Long> most = new HashMap<>();
    /** Per file, through all its handles: a force of any handle forces the file (fdatasync of its inode). */
    private final Map<Path, Long> unforced = new HashMap<>();

    /** Forgets the most seen so far: {@link #most} counts from here. */
    synchronized void reset() {
        most.clear();
    }

    /** The most bytes of any file whose name {@code which} takes written and not yet forced, at any time. */
    synchronized long most(Predicate<String> which) {
        return most.entrySet().stream().filter(e -> which.test(e.getKey().getFileName().toString()))
                .mapToLong(Map.Entry::getValue).max().orElse(0);
    }

    @Override
    public DiskFile open(Path file, boolean create) throws IOException {
        return counted(file, real.open(file, create));
    }

    @Override
    public DiskFile openForPageWrites(Path file) throws IOException {
        return counted(file, real.openForPageWrites(file));
    }

    private DiskFile counted(Path file, DiskFile f) {
        return new DiskFile() {
            public int read(ByteBuffer dst, long pos) throws IOException {
                return f.read(dst, pos);
            }

            public int write(ByteBuffer src, long pos) throws IOException {
                int n = f.write(src, pos);
                synchronized (UnforcedBytes.this) {
                    most.merge(file, unforced.merge(file, (long) n, Long::sum), Math::max);
                }
                return n;
            }

            public void force(boolean metadata) throws IOException {
                f.force(metadata);
                synchronized (UnforcedBytes.this) {
                    unforced.remove(file);
                }
            }

            public void truncate(long size) throws IOException {
                f.truncate(size);
            }

            public long size() throws IOException {
                return f.size();
            }

            public boolean punch(long offset, long length) throws IOException {
                return f.punch(offset, length);
            }

            public void close() throws IOException {
                f.close();
            }
        };
    }

    public boolean exists(Path file) {
        return real.exists(file);
    }

    public byte[] readAll(Path file) throws IOException {
        return real.readAll(file);
    }

    public void rename(Path from, Path to) throws IOException {
        real.rename(from, to);
    }

    public void delete(Path file) throws IOException {
        real.delete(file);
    }

    public void syncDirectory(Path d) throws IOException {
        real.syncDirectory(d);
    }

    public long usableSpace(Path file) throws IOException {
        return real.usableSpace(file);
    }
}

