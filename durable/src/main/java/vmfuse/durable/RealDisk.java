package vmfuse.durable;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;

/** The machine's disk: FileChannel, rename(2), unlink(2), and fsync of a directory opened read-only. */
public final class RealDisk implements Disk {
    private final Punch punch;

    private RealDisk(Punch punch) {
        this.punch = punch;
    }

    /** The machine's own disk; {@code punch} frees ranges (null: punches fail and zeros are written). */
    public static Disk of(Punch punch) {
        return new RealDisk(punch);
    }

    @Override
    public DiskFile open(Path file, boolean create) throws IOException {
        FileChannel ch = create
                ? FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.READ, StandardOpenOption.WRITE)
                : FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE);
        return new File(file, ch);
    }

    /**
     * O_DIRECT: the pages go from the caller's buffer to the disk, not through the page cache.
     * Where the filesystem refuses O_DIRECT at open (tmpfs), the plain handle; where it refuses
     * O_DIRECT's writes, the plain handle from the first it refused ({@link PageWrites}).
     */
    @Override
    public DiskFile openForPageWrites(Path file) throws IOException {
        DiskFile direct;
        try {
            direct = new File(file, FileChannel.open(file, StandardOpenOption.WRITE,
                    com.sun.nio.file.ExtendedOpenOption.DIRECT));
        } catch (IOException | UnsupportedOperationException e) {
            return open(file, false);
        }
        return new PageWrites(direct, () -> open(file, false));
    }

    @Override
    public boolean exists(Path file) {
        return Files.exists(file);
    }

    @Override
    public byte[] readAll(Path file) throws IOException {
        return Files.readAllBytes(file);
    }

    @Override
    public void rename(Path from, Path to) throws IOException {
        Files.move(from, to, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    @Override
    public void delete(Path file) throws IOException {
        Files.deleteIfExists(file);
    }

    @Override
    public void syncDirectory(Path dir) throws IOException {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) { // Linux fsyncs a directory opened so
            ch.force(true);
        }
    }

    @Override
    public long usableSpace(Path file) throws IOException {
        return Files.getFileStore(file).getUsableSpace();
    }

    private final class File implements DiskFile {
        private final Path path;
        private final FileChannel ch;

        File(Path path, FileChannel ch) {
            this.path = path;
            this.ch = ch;
        }

        @Override
        public int read(ByteBuffer dst, long pos) throws IOException {
            return ch.read(dst, pos);
        }

        @Override
        public int write(ByteBuffer src, long pos) throws IOException {
            return ch.write(src, pos);
        }

        @Override
        public void force(boolean metadata) throws IOException {
            ch.force(metadata);
        }

        @Override
        public void truncate(long size) throws IOException {
            ch.truncate(size);
        }

        @Override
        public long size() throws IOException {
            return ch.size();
        }

        @Override
        public boolean punch(long offset, long length) throws IOException {
            return punch != null && punch.punch(path, offset, length);
        }

        @Override
        public void close() throws IOException {
            ch.close();
        }
    }
}
