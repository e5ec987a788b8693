package vmfuse.journal;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

import vmfuse.durable.Disk;
import vmfuse.durable.DiskFile;

/**
 * A disk that stops answering: once {@link #arm armed}, the reads (or the writes) of the files
 * {@code which} picks hang until {@link #release}; everything else goes to the real disk. (Not
 * FaultyDisk: its calls hold its monitor, so one that hung there would hold up every other.)
 */
final class HangingDisk implements Disk {
    enum Op { READ, WRITE }

    private final Disk real;
    private final Predicate<Path> which;
    private final Op op;
    private volatile boolean armed;
    private final CountDownLatch hung = new CountDownLatch(1);
    private final CountDownLatch released = new CountDownLatch(1);

    HangingDisk(Disk real, Predicate<Path> which, Op op) {
        this.real = real;
        this.which = which;
        this.op = op;
    }

    /** From now on the picked operations hang. */
    void arm() {
        armed = true;
    }

    /** Whether an operation hung within 30 s. */
    boolean hung() throws InterruptedException {
        return hung.await(30, TimeUnit.SECONDS);
    }

    /** Every operation hung, and every later one, goes on. */
    void release() {
        armed = false;
        released.countDown();
    }

    private void hangIf(Op o) throws IOException {
        if (armed && o == op) {
            hung.countDown();
            try {
                released.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException(e);
            }
        }
    }

    @Override
    public DiskFile open(Path f, boolean create) throws IOException {
        DiskFile d = real.open(f, create);
        if (!which.test(f)) {
            return d;
        }
        return new DiskFile() {
            @Override
            public int read(ByteBuffer dst, long pos) throws IOException {
                hangIf(Op.READ);
                return d.read(dst, pos);
            }

            @Override
            public int write(ByteBuffer src, long pos) throws IOException {
                hangIf(Op.WRITE);
                return d.write(src, pos);
            }

            @Override
            public void force(boolean metadata) throws IOException {
                d.force(metadata);
            }

            @Override
            public void truncate(long size) throws IOException {
                d.truncate(size);
            }

            @Override
            public long size() throws IOException {
                return d.size();
            }

            @Override
            public boolean punch(long offset, long length) throws IOException {
                return d.punch(offset, length);
            }

            @Override
            public void close() throws IOException {
                d.close();
            }
        };
    }

    @Override
    public boolean exists(Path f) {
        return real.exists(f);
    }

    @Override
    public byte[] readAll(Path f) throws IOException {
        return real.readAll(f);
    }

    @Override
    public void rename(Path from, Path to) throws IOException {
        real.rename(from, to);
    }

    @Override
    public void delete(Path f) throws IOException {
        real.delete(f);
    }

    @Override
    public void syncDirectory(Path d) throws IOException {
        real.syncDirectory(d);
    }

    @Override
    public long usableSpace(Path f) throws IOException {
        return real.usableSpace(f);
    }
}
