package vmfuse.journal;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.zip.CRC32C;

/*
 * The redo log of journal devices in flush mode: what makes a flush durable without a commit of
 * the MapDB store (a MapDB commit costs milliseconds; an fdatasync of an append-only file, a
 * tenth of one).
 *
 * File format, version 1 (STORE/journals.redo), little-endian:
 *
 *   header    magic "VJRH" u32 | version u32 = 1 | generation u64
 *   record*   magic "VJRL" u32 | payload length u32 | crc32c(payload) u32 | payload
 *   payload   type u8 | device root record id u64 | a u64 | b u64 | data...
 *             WRITE: a = offset, data = the bytes     ZERO: a = offset, b = length
 *             SIZE:  a = new size
 *
 * The generation is that of the MapDB commit the log continues. A checkpoint commits the store
 * with the next generation, then restarts the log with it; a crash between the two leaves a log
 * of the old generation, which recovery discards (the commit already holds it). Recovery replays
 * records up to the first that is torn or fails its checksum: a flush returned only after its
 * records were forced, so a torn tail is never a flushed record.
 */
final class RedoLog implements AutoCloseable {
    static final int VERSION = 1;
    private static final int HEADER_MAGIC = 0x4852_4A56; // "VJRH"
    private static final int RECORD_MAGIC = 0x4C52_4A56; // "VJRL"
    private static final int HEADER_SIZE = 16;
    private static final int RECORD_HEADER = 12;
    private static final int PAYLOAD_FIXED = 25;
    static final byte WRITE = 1;
    static final byte ZERO = 2;
    static final byte SIZE = 3;

    /** What recovery hands back, record by record. */
    interface Replay {
        void apply(byte type, long root, long a, long b, byte[] data) throws StoreException;
    }

    private final Path file;
    private final FileChannel ch;

    private RedoLog(Path file, FileChannel ch) {
        this.file = file;
        this.ch = ch;
    }

    /**
     * Opens the log at {@code file}: if it continues {@code generation}, replays its intact records
     * into {@code replay} and returns how many; a log of another generation is ignored. The caller
     * checkpoints afterwards, which restarts the log.
     */
    static RedoLog open(Path file, long generation, Replay replay, long[] replayed) throws StoreException {
        try {
            FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.READ,
                    StandardOpenOption.WRITE);
            RedoLog log = new RedoLog(file, ch);
            replayed[0] = log.replay(generation, replay);
            return log;
        } catch (IOException e) {
            throw new StoreException(StoreException.EIO, "cannot open redo log " + file + ": " + e.getMessage(), e);
        }
    }

    private long replay(long generation, Replay replay) throws IOException, StoreException {
        long size = ch.size();
        if (size < HEADER_SIZE) {
            return 0;
        }
        ByteBuffer h = read(0, HEADER_SIZE);
        int magic = h.getInt();
        int version = h.getInt();
        long gen = h.getLong();
        if (magic != HEADER_MAGIC) {
            throw new StoreException(StoreException.EIO, "refusing redo log " + file + ": not a vmfuse redo log");
        }
        if (version != VERSION) {
            throw new StoreException(StoreException.EIO, "refusing redo log " + file + ": version " + version
                    + ", this vmfuse reads " + VERSION);
        }
        if (gen != generation) {
            return 0; // older than the last checkpoint, which holds everything in it
        }
        long pos = HEADER_SIZE;
        long count = 0;
        CRC32C crc = new CRC32C();
        while (pos + RECORD_HEADER <= size) {
            ByteBuffer rh = read(pos, RECORD_HEADER);
            int rmagic = rh.getInt();
            int len = rh.getInt();
            int sum = rh.getInt();
            if (rmagic != RECORD_MAGIC || len < PAYLOAD_FIXED || pos + RECORD_HEADER + len > size) {
                break; // a torn tail
            }
            ByteBuffer p = read(pos + RECORD_HEADER, len);
            crc.reset();
            crc.update(p.duplicate());
            if ((int) crc.getValue() != sum) {
                break;
            }
            byte type = p.get();
            long root = p.getLong();
            long a = p.getLong();
            long b = p.getLong();
            byte[] data = new byte[p.remaining()];
            p.get(data);
            replay.apply(type, root, a, b, data);
            count++;
            pos += RECORD_HEADER + len;
        }
        return count;
    }

    private ByteBuffer read(long pos, int len) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(len).order(ByteOrder.LITTLE_ENDIAN);
        while (b.hasRemaining()) {
            if (ch.read(b, pos + b.position()) < 0) {
                throw new IOException("unexpected end of " + file);
            }
        }
        return b.flip();
    }

    /** Appends one record (not yet durable: {@link #force()} makes it so). */
    synchronized void append(byte type, long root, long a, long b, byte[] data, int off, int len) throws StoreException {
        int payload = PAYLOAD_FIXED + len;
        ByteBuffer r = ByteBuffer.allocate(RECORD_HEADER + payload).order(ByteOrder.LITTLE_ENDIAN);
        r.position(RECORD_HEADER);
        r.put(type).putLong(root).putLong(a).putLong(b);
        if (len > 0) {
            r.put(data, off, len);
        }
        CRC32C crc = new CRC32C();
        crc.update(r.array(), RECORD_HEADER, payload);
        r.putInt(0, RECORD_MAGIC).putInt(4, payload).putInt(8, (int) crc.getValue());
        r.position(0);
        try {
            long pos = ch.size();
            while (r.hasRemaining()) {
                pos += ch.write(r, pos);
            }
        } catch (IOException e) {
            throw new StoreException(e.getMessage() != null && e.getMessage().contains("No space")
                    ? StoreException.ENOSPC : StoreException.EIO, "cannot append to redo log " + file + ": "
                    + e.getMessage(), e);
        }
    }

    /** fdatasync: every record appended so far is on disk. */
    void force() throws StoreException {
        try {
            ch.force(false);
        } catch (IOException e) {
            throw new StoreException(StoreException.EIO, "cannot sync redo log " + file + ": " + e.getMessage(), e);
        }
    }

    /** Restarts the log for {@code generation} (after the checkpoint that holds everything in it). */
    synchronized void restart(long generation) throws StoreException {
        try {
            ch.truncate(0);
            ByteBuffer h = ByteBuffer.allocate(HEADER_SIZE).order(ByteOrder.LITTLE_ENDIAN);
            h.putInt(HEADER_MAGIC).putInt(VERSION).putLong(generation).flip();
            while (h.hasRemaining()) {
                ch.write(h, h.position());
            }
            ch.force(true);
        } catch (IOException e) {
            throw new StoreException(StoreException.EIO, "cannot restart redo log " + file + ": " + e.getMessage(), e);
        }
    }

    long size() throws IOException {
        return ch.size();
    }

    @Override
    public void close() throws IOException {
        ch.close();
    }
}
