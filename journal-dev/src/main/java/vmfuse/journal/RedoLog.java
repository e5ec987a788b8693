package vmfuse.journal;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.zip.CRC32C;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import vmfuse.durable.Disk;
import vmfuse.durable.DiskFile;

/*
 * The redo log of journal devices in flush mode: what makes a flush durable without a commit of
 * the MapDB store (a MapDB commit costs milliseconds; an fdatasync of a log, a tenth of one).
 *
 * Two segment files, BASE.0 and BASE.1; the segment of generation g is file g % 2. Format,
 * version 2, little-endian:
 *
 *   header    magic "VJRH" u32 | version u32 = 2 | generation u64
 *   record*   magic "VJRL" u32 | payload length u32 | crc32c(payload) u32 | payload
 *   payload   generation u64 | type u8 | device root record id u64 | a u64 | b u64 | data...
 *             WRITE: a = offset, data = the bytes     ZERO: a = offset, b = length
 *             SIZE:  a = new size
 *
 * Generations. The store's commit records a generation C: the committed state holds every
 * record of every segment older than C. A checkpoint rotates to the next segment (C + 1, which
 * reuses the file of C - 1, obsolete since the commit of C), moves what the old segment logged
 * into the store, and commits C + 1. A crash before that commit leaves segments C and C + 1 to
 * replay, in that order; after it, only C + 1. Recovery replays every segment whose generation
 * is at least the committed one.
 *
 * Segments are reused, never truncated while in use, and preallocated with zeros (at their
 * first append: a store whose devices never flush has no log to speak of): an append
 * overwrites blocks the file already has, so an fdatasync writes data and no file metadata
 * (which would cost an ext4 journal commit per flush). A segment's records carry its
 * generation, so what an older use left after the end of the current records is not replayed;
 * neither is a record that is torn or fails its checksum, nor anything after it. A flush
 * returned only after its records were forced, so a torn tail is never a flushed record.
 *
 * Appends write whole pages, as database logs write whole log blocks: the log keeps the active
 * segment's last, partly filled page in memory (the tail), and an append writes that page's
 * records again, then the new record, then zeros to the end of its last page, from one
 * page-aligned direct buffer with one pwrite. A write of part of a page the page cache does
 * not hold would make the kernel read the page first (a disk read per append, measured on the
 * ext4-on-a-journal-device benchmark); a heap buffer would be copied once more by the JDK. The
 * bytes written again are the ones already there, so a write torn by a crash leaves every
 * earlier record as it was; the zeros after the new record are where the next one goes (a scan
 * stops at them). A WRITE longer than MAX_DATA is logged as consecutive records, so the buffer
 * stays bounded.
 */
final class RedoLog implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(RedoLog.class);
    static final int VERSION = 2;
    private static final int HEADER_MAGIC = 0x4852_4A56; // "VJRH"
    private static final int RECORD_MAGIC = 0x4C52_4A56; // "VJRL"
    static final int HEADER_SIZE = 16;
    private static final int RECORD_HEADER = 12;
    private static final int PAYLOAD_FIXED = 33;
    static final int PAGE = 4096;
    /** The most data one record carries: longer writes are logged as several records. */
    static final int MAX_DATA = 1 << 20;
    static final byte WRITE = 1;
    static final byte ZERO = 2;
    static final byte SIZE = 3;

    /** What recovery hands back, record by record. */
    interface Replay {
        void apply(byte type, long root, long a, long b, byte[] data) throws StoreException;
    }

    private final Path base;
    private final long preallocate;
    private final DiskFile[] segments = new DiskFile[2];
    /** Generation of the segment appended to. Guarded by this. */
    private long generation;
    /**
     * Where the next record goes in the active segment. Written under this monitor; read without
     * it by writers deciding on a checkpoint, which must not wait for the monitor.
     */
    private volatile long position;
    /** Records appended since the log was opened. Guarded by this. */
    private long appended;
    /** Of them, those on disk: an fdatasync that returned had them, or the store's commit does. Guarded by this. */
    private long durable;
    /**
     * Records appended before the last rotation: the inactive segment's, or older. While durable
     * is below it, the inactive segment holds records no fdatasync had and no commit holds yet (a
     * rotation does not force the segment it leaves), and a force forces it too. Guarded by this.
     */
    private long rotatedAt;
    /**
     * Forces running outside the monitor. Two fdatasyncs of one file at once (a flush's and a
     * preallocation's) may split a writeback error between them: Linux reports it to one, the
     * other returns 0. While one runs, what the other returned proves nothing. Guarded by this.
     */
    private int forcing;
    /** Whether each segment was zero-filled to the preallocated size (at its first append). Guarded by this. */
    private final boolean[] preallocated = new boolean[2];
    /**
     * The active segment from tailStart (page-aligned) to position, followed by room for one
     * record of MAX_DATA and a page of zeros; page-aligned, direct. Allocated at the first
     * append or header. Guarded by this.
     */
    private ByteBuffer tail;
    /** File offset of tail's first byte: position rounded down to a page. Guarded by this. */
    private long tailStart;
    /**
     * The first fdatasync that failed, if one did. Sticky, as PostgreSQL learned to make it: Linux
     * reports a writeback error once per descriptor and marks the pages clean, so a later
     * fdatasync returns 0 although records appended before it never reached the disk. Every
     * force after one failed fails, until the store is opened again and replays what the disk kept.
     */
    private volatile StoreException broken;

    private RedoLog(Path base, long preallocate) {
        this.base = base;
        this.preallocate = preallocate;
    }

    static Path segmentFile(Path base, int i) {
        return base.resolveSibling(base.getFileName() + "." + i);
    }

    /**
     * Opens the segments at {@code base}.0 and .1 (created and preallocated if absent), replays
     * every intact record of the segments of generation {@code committed} or later into
     * {@code replay}, oldest first, and returns the log; {@code replayed[0]} is how many records.
     * The caller then checkpoints, which rotates to a fresh segment.
     */
    static RedoLog open(Disk disk, Path base, long committed, long preallocate, Replay replay, long[] replayed)
            throws StoreException {
        RedoLog r = new RedoLog(base, preallocate);
        try {
            boolean created = false;
            for (int i = 0; i < 2; i++) {
                created |= !disk.exists(segmentFile(base, i));
                r.segments[i] = disk.open(segmentFile(base, i), true);
            }
            if (created) { // before any header is written into them, so no flushed record is in an unlinked file
                disk.syncDirectory(base.toAbsolutePath().getParent());
            }
            record Live(long generation, int file) {} // a segment the committed state does not hold
            List<Live> live = new ArrayList<>();
            for (int i = 0; i < 2; i++) {
                long g = r.header(i);
                if (g >= committed) {
                    live.add(new Live(g, i));
                }
            }
            live.sort(Comparator.comparingLong(Live::generation));
            long count = 0;
            long last = committed;
            for (Live seg : live) {
                count += r.replay(seg.file(), seg.generation(), replay);
                last = seg.generation();
            }
            replayed[0] = count;
            // appends continue in the newest segment until the caller's checkpoint rotates
            r.generation = last;
            if (live.isEmpty()) {
                r.writeHeader(last);
            } else {
                r.position = r.end((int) (last % 2), last);
                r.loadTail();
            }
            return r;
        } catch (IOException e) {
            r.closeQuietly();
            throw new StoreException(StoreException.EIO, "cannot open redo log " + base + ".{0,1}: " + e.getMessage(), e);
        } catch (StoreException | RuntimeException e) {
            r.closeQuietly();
            throw e;
        }
    }

    /** The generation in segment {@code i}'s header; -1 if it has none (new, or a header torn in a rotation). */
    private long header(int i) throws IOException, StoreException {
        if (segments[i].size() < HEADER_SIZE) {
            return -1;
        }
        ByteBuffer h = read(i, 0, HEADER_SIZE);
        int magic = h.getInt();
        int version = h.getInt();
        long gen = h.getLong();
        if (magic != HEADER_MAGIC) {
            if (magic != 0) {
                log.warn("redo log {} has no valid header; no flushed record can be in it (a header reaches the "
                        + "disk with the first force of its segment), so it is reused", segmentFile(base, i));
            }
            return -1;
        }
        if (version != VERSION) {
            throw new StoreException(StoreException.EIO, "refusing redo log " + segmentFile(base, i) + ": version "
                    + version + ", this vmfuse reads " + VERSION + "; it is left as it is");
        }
        return gen;
    }

    /** Replays segment {@code i} of generation {@code gen}; returns the records applied. */
    private long replay(int i, long gen, Replay replay) throws IOException, StoreException {
        long[] count = new long[1];
        scan(i, gen, (type, root, a, b, data) -> {
            replay.apply(type, root, a, b, data);
            count[0]++;
        });
        return count[0];
    }

    /** Where the intact records of segment {@code i} (generation {@code gen}) end. */
    private long end(int i, long gen) throws IOException, StoreException {
        return scan(i, gen, (type, root, a, b, data) -> { });
    }

    private long scan(int i, long gen, Replay replay) throws IOException, StoreException {
        long size = segments[i].size();
        long pos = HEADER_SIZE;
        CRC32C crc = new CRC32C();
        while (pos + RECORD_HEADER <= size) {
            ByteBuffer rh = read(i, pos, RECORD_HEADER);
            int rmagic = rh.getInt();
            int len = rh.getInt();
            int sum = rh.getInt();
            if (rmagic != RECORD_MAGIC || len < PAYLOAD_FIXED || pos + RECORD_HEADER + len > size) {
                break; // the end, or a torn record
            }
            ByteBuffer p = read(i, pos + RECORD_HEADER, len);
            crc.reset();
            crc.update(p.duplicate());
            if ((int) crc.getValue() != sum || p.getLong() != gen) {
                break; // torn, corrupt, or left by an older use of this file
            }
            byte type = p.get();
            long root = p.getLong();
            long a = p.getLong();
            long b = p.getLong();
            byte[] data = new byte[p.remaining()];
            p.get(data);
            replay.apply(type, root, a, b, data);
            pos += RECORD_HEADER + len;
        }
        return pos;
    }

    private ByteBuffer read(int i, long pos, int len) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(len).order(ByteOrder.LITTLE_ENDIAN);
        while (b.hasRemaining()) {
            if (segments[i].read(b, pos + b.position()) < 0) {
                throw new IOException("unexpected end of " + segmentFile(base, i));
            }
        }
        return b.flip();
    }

    /**
     * Zero-fills the active segment up to the preallocated size, so that appends overwrite, at its
     * first append (a store whose devices never flush keeps each segment at its header page).
     * Once done the segment keeps that size: shrinking cuts back to it, never below. A full disk
     * only costs speed: the log then grows as it is written. A failed fsync is the log's, not
     * the preallocation's: it may be the writeback of the segment's header, written and not yet
     * forced (see {@link #rotate}), which a later fdatasync would then report as done.
     */
    private void preallocateActive() {
        int i = (int) (generation % 2);
        preallocated[i] = true;
        DiskFile ch = segments[i];
        ByteBuffer zeros = ByteBuffer.allocate(1 << 20);
        try {
            long size = ch.size();
            if (size >= preallocate) {
                return;
            }
            while (size < preallocate) {
                zeros.clear().limit((int) Math.min(zeros.capacity(), preallocate - size));
                size += ch.write(zeros, size);
            }
        } catch (IOException e) {
            log.warn("redo log {}: cannot preallocate {} bytes ({}); it grows as it is written",
                    segmentFile(base, i), preallocate, e.getMessage());
        }
        try {
            ch.force(true);
        } catch (IOException e) {
            markBroken(e);
        }
    }

    private DiskFile active() {
        return segments[(int) (generation % 2)];
    }

    /**
     * Appends one record to the active segment (not yet durable: {@link #force()} makes it so);
     * a WRITE of more than MAX_DATA bytes as several.
     */
    synchronized void append(byte type, long root, long a, long b, byte[] data, int off, int len) throws StoreException {
        if (!preallocated[(int) (generation % 2)]) {
            preallocateActive();
        }
        while (len > MAX_DATA && type == WRITE) {
            appendOne(type, root, a, b, data, off, MAX_DATA);
            a += MAX_DATA;
            off += MAX_DATA;
            len -= MAX_DATA;
        }
        appendOne(type, root, a, b, data, off, len);
    }

    private void appendOne(byte type, long root, long a, long b, byte[] data, int off, int len) throws StoreException {
        if (len > MAX_DATA) {
            throw new IllegalArgumentException("a record of " + len + " bytes of data; at most " + MAX_DATA);
        }
        int payload = PAYLOAD_FIXED + len;
        int head = (int) (position - tailStart); // the tail page's bytes, written again
        ByteBuffer t = tail();
        t.clear().position(head + RECORD_HEADER);
        t.putLong(generation).put(type).putLong(root).putLong(a).putLong(b);
        if (len > 0) {
            t.put(data, off, len);
        }
        int end = t.position();
        CRC32C crc = new CRC32C();
        crc.update(t.duplicate().position(head + RECORD_HEADER).limit(end));
        t.putInt(head, RECORD_MAGIC).putInt(head + 4, payload).putInt(head + 8, (int) crc.getValue());
        // zeros from the record's end to the end of its page, and a page of them if it ends on a page
        // boundary: a scan stops at the first bytes that are not a record, and without them the
        // next page would still hold what an older use of the file left there (records of another
        // generation, or a failed longer append's bytes, which come from a guest)
        int pages = ((end + PAGE - 1) & -PAGE) + ((end & (PAGE - 1)) == 0 ? PAGE : 0);
        zero(t, end, pages);
        t.position(0).limit(pages);
        DiskFile ch = active();
        try {
            long pos = tailStart;
            while (t.hasRemaining()) {
                pos += ch.write(t, pos);
            }
        } catch (IOException e) {
            // position stays: the next append writes the tail page and its own record over this one
            throw new StoreException(StoreException.errno(e), "cannot append to redo log "
                    + segmentFile(base, (int) (generation % 2)) + ": " + e.getMessage(), e);
        }
        position = tailStart + end; // only a whole record moves the end
        appended++;
        int keep = end & -PAGE; // the new tail page moves to the buffer's start
        if (keep > 0) { // from [keep, end) to [0, end - keep): they do not overlap, as end - keep < PAGE <= keep
            t.limit(end).position(keep);
            ByteBuffer rest = t.slice();
            t.clear();
            t.put(rest);
            tailStart += keep;
        }
    }

    /** The append buffer, allocated at first use: room for the tail page, one record, zeros to a page end. */
    private ByteBuffer tail() {
        if (tail == null) {
            int size = (PAGE + RECORD_HEADER + PAYLOAD_FIXED + MAX_DATA + 2 * PAGE - 1) & -PAGE;
            tail = ByteBuffer.allocateDirect(size + PAGE).alignedSlice(PAGE).order(ByteOrder.LITTLE_ENDIAN);
        }
        return tail;
    }

    private static final byte[] ZEROS = new byte[PAGE];

    private static void zero(ByteBuffer b, int from, int to) {
        b.position(from);
        while (b.position() < to) {
            b.put(ZEROS, 0, Math.min(ZEROS.length, to - b.position()));
        }
    }

    /** Reads the active segment's last, partly filled page (up to position) into the tail buffer. */
    private void loadTail() throws IOException {
        tailStart = position & -PAGE;
        ByteBuffer t = tail();
        t.clear().limit((int) (position - tailStart));
        DiskFile ch = active();
        while (t.hasRemaining()) {
            if (ch.read(t, tailStart + t.position()) < 0) {
                throw new IOException("unexpected end of " + segmentFile(base, (int) (generation % 2)));
            }
        }
    }

    /**
     * fdatasync of the active segment (and first of the inactive one, if a rotation left records
     * there that no fdatasync had): every record appended so far is on disk. Fails at once, and
     * for good, if an fdatasync of this log failed before (see {@link #broken}). Returns how many
     * records were appended when it began ({@link #appended()}): those are on disk.
     */
    long force() throws StoreException {
        DiskFile ch;
        DiskFile left;
        long upTo;
        synchronized (this) {
            if (broken != null) {
                throw broken;
            }
            ch = active();
            left = durable < rotatedAt ? segments[(int) ((generation + 1) % 2)] : null;
            upTo = appended;
            forcing++;
        }
        IOException failed = null;
        try {
            if (left != null) {
                left.force(false);
            }
            ch.force(false);
        } catch (IOException e) {
            failed = e;
        } catch (RuntimeException | Error e) { // its outcome unknown: as a failure, never leaving `forcing` raised
            failed = new IOException("fdatasync failed: " + e, e);
        }
        synchronized (this) {
            forcing--;
            if (failed != null) {
                throw markBroken(failed);
            }
            if (broken != null) {
                // another fdatasync of the same file failed meanwhile: the error may have been its
                // to report, and this one's 0 proves nothing
                throw broken;
            }
            // at least rotatedAt, unless a rotation came since: then what it left is forced up to upTo only
            durable = Math.max(durable, upTo);
            return upTo;
        }
    }

    /** Records appended since the log was opened (a flush needs as many on disk as there were when it came). */
    synchronized long appended() {
        return appended;
    }

    /**
     * True if every record appended so far is on disk, by an fdatasync that returned, and none
     * failed: a flush then has nothing to force. False after a failed one, whose error a flush
     * must report.
     */
    synchronized boolean allDurable() {
        return broken == null && forcing == 0 && durable == appended;
    }

    /** Records the first failed fdatasync; the error every force returns from now on. */
    private StoreException markBroken(IOException e) {
        synchronized (this) {
            if (broken == null) {
                broken = new StoreException(StoreException.EIO, "an fdatasync of redo log " + base + " failed ("
                        + e.getMessage() + "): records appended before it may not be on disk, so no flush of a "
                        + "flush-mode device succeeds until the store is opened again (vmfuse umount, then mount)", e);
                log.error("redo log {}: fdatasync failed ({}); every flush fails from now on, until the store is "
                        + "opened again", base, e.getMessage());
            }
            return broken;
        }
    }

    /**
     * Makes the segment of {@code next} (the file of {@code next - 2}, whose records the store's
     * last commit holds) the active one. It forces nothing: a rotation runs with every writer of
     * the store held off (a checkpoint's start), and its two fdatasyncs (the old segment, the new
     * header) were milliseconds there while the disk was busy. The next force forces the old
     * segment too, if it holds records no fdatasync had; the commit that follows the rotation
     * holds them anyway. The new header reaches the disk with the first force of its segment,
     * before any record of it is flushed.
     */
    synchronized void rotate(long next) throws StoreException {
        long previous = generation;
        try {
            writeHeader(next);
        } catch (IOException e) {
            // appends go on in the segment they were in: its tail page back into the buffer the header took
            generation = previous;
            try {
                loadTail();
            } catch (IOException again) {
                e.addSuppressed(again);
            }
            throw new StoreException(StoreException.EIO, "cannot rotate redo log " + base + ": " + e.getMessage(), e);
        }
        // the segment reused was committed before this rotation: whatever it lacked on disk is moot
        rotatedAt = appended;
    }

    /** Starts the active segment for generation {@code gen}: its header, alone in its first page (not forced). */
    private void writeHeader(long gen) throws IOException {
        generation = gen;
        ByteBuffer t = tail();
        t.clear();
        t.putInt(HEADER_MAGIC).putInt(VERSION).putLong(gen);
        zero(t, HEADER_SIZE, PAGE);
        t.flip();
        DiskFile ch = active();
        while (t.hasRemaining()) {
            ch.write(t, t.position());
        }
        tailStart = 0;
        position = HEADER_SIZE;
    }

    /**
     * Cuts both segments back to the preallocated size, after a commit (at open and close): the
     * active one only if its records end within that size, since appends go on at their end.
     */
    synchronized void shrink() throws StoreException {
        inactiveCommitted();
        if (position <= preallocate) {
            shrink(active());
        }
    }

    /**
     * The store's commit holds what the segment not in use logged (a checkpoint's end): its
     * records are durable whatever was forced, and it is cut back to the preallocated size, so a
     * burst of writes does not leave the log large.
     */
    synchronized void inactiveCommitted() throws StoreException {
        durable = Math.max(durable, rotatedAt);
        shrink(segments[(int) ((generation + 1) % 2)]);
    }

    private void shrink(DiskFile ch) throws StoreException {
        try {
            if (ch.size() > preallocate) {
                ch.truncate(preallocate);
            }
        } catch (IOException e) {
            throw new StoreException(StoreException.EIO, "cannot shrink redo log " + base + ": " + e.getMessage(), e);
        }
    }

    synchronized long generation() {
        return generation;
    }

    /** Bytes of records in the active segment (never waits on this log's monitor). */
    long position() {
        return position;
    }

    /** Bytes the segments take on disk. */
    long bytesOnDisk() {
        long n = 0;
        for (DiskFile ch : segments) {
            try {
                n += ch.size();
            } catch (IOException e) {
                // closed: counts as nothing
            }
        }
        return n;
    }

    private void closeQuietly() {
        for (DiskFile ch : segments) {
            try {
                if (ch != null) {
                    ch.close();
                }
            } catch (IOException e) {
                log.warn("closing redo log {}: {}", base, e.getMessage());
            }
        }
    }

    @Override
    public void close() {
        closeQuietly();
    }
}
