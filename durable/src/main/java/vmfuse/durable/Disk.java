package vmfuse.durable;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;

/**
 * The one place the daemon writes, forces, renames and deletes its durable files (the journal
 * store, its commit and length files, the redo log; the reclaimer's logs, the release ledger and
 * the VM registry as they move here), and syncs their directories. Nothing else opens them for
 * writing.
 *
 * <p>The contract is POSIX's, read strictly, as a disk with a volatile write cache behaves on a
 * power cut: a file's writes survive only once {@link DiskFile#force} returned; a create, rename
 * or delete survives only once {@link #syncDirectory} of its directory returned. {@link RealDisk}
 * is the machine's disk; {@link FaultyDisk} is that contract and nothing more, with I/O errors
 * and power cuts where a test says (the approach of SQLite's crash and I/O-error test VFS, RocksDB's
 * FaultInjectionTestFS and CrashMonkey).
 */
public interface Disk {
    /** Frees a byte range of a file (fallocate PUNCH_HOLE|KEEP_SIZE); false if its filesystem cannot. */
    @FunctionalInterface
    interface Punch {
        boolean punch(Path file, long offset, long length) throws IOException;
    }

    /** Opens {@code file} for reading and writing; creates it (empty) if {@code create} and it is absent. */
    DiskFile open(Path file, boolean create) throws IOException;

    /**
     * A second handle on an existing {@code file}, for writes of whole 4 KiB pages at offsets
     * that are multiples of 4 KiB from buffers aligned to 4 KiB (see {@link #alignedBuffer}),
     * which bypass the page cache where the file's filesystem allows it (O_DIRECT). A write
     * through it is like any other: durable once a force of the file (through any handle)
     * returns. By default, and where O_DIRECT is refused, it is {@link #open}.
     */
    default DiskFile openForPageWrites(Path file) throws IOException {
        return open(file, false);
    }

    /** A direct buffer of {@code bytes} (a multiple of 4 KiB) whose address is a multiple of 4 KiB. */
    static java.nio.ByteBuffer alignedBuffer(int bytes) {
        return java.nio.ByteBuffer.allocateDirect(bytes + 4096).alignedSlice(4096).limit(bytes).slice();
    }

    boolean exists(Path file);

    /** The whole file (it is small: a length or registry record, a commit file). */
    byte[] readAll(Path file) throws IOException;

    /**
     * As {@link #readAll(Path)}, tried up to {@code tries} times: a read error may pass (a path
     * that came back), and a registry read at mount should not fail the mount, or set its counts
     * aside, for one. {@code retrying} hears of each failure tried again.
     */
    default byte[] readAll(Path file, int tries, java.util.function.Consumer<IOException> retrying) throws IOException {
        for (int t = 1; ; t++) {
            try {
                return readAll(file);
            } catch (IOException e) {
                if (t >= tries) {
                    throw e;
                }
                retrying.accept(e);
            }
        }
    }

    /** Renames {@code from} over {@code to}, atomically (rename(2)); durable after a sync of the directory. */
    void rename(Path from, Path to) throws IOException;

    /** Deletes {@code file} if it exists (unlink(2)); durable after a sync of the directory. */
    void delete(Path file) throws IOException;

    /** fsync of a directory: every create, rename and delete in it so far survives a power cut. */
    void syncDirectory(Path dir) throws IOException;

    /** Bytes free for this process on the filesystem of {@code file}. */
    long usableSpace(Path file) throws IOException;

    /**
     * Writes a small file whole, the one way to rewrite a record file (a registry, a ledger, a
     * compacted log): FILE.tmp written, forced, renamed over FILE, the directory synced. After a
     * crash FILE holds its old contents or these, never part of either.
     */
    default void replace(Path file, byte[] contents) throws IOException {
        replace(file, contents, true);
    }

    /**
     * As {@link #replace(Path, byte[])}; not {@code durable}: nothing forced, so after a power cut
     * FILE may hold its old contents, these, or (on a filesystem that does not order a rename after
     * the data it names) neither whole. Only for files whose loss costs counts, never data.
     */
    default void replace(Path file, byte[] contents, boolean durable) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        try (DiskFile t = open(tmp, true)) {
            t.truncate(0);
            t.writeFully(ByteBuffer.wrap(contents), 0);
            if (durable) {
                t.force(true);
            }
        }
        rename(tmp, file);
        if (durable) {
            syncDirectory(file.toAbsolutePath().getParent());
        }
    }
}
