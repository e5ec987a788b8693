package vmfuse.journal;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.security.SecureRandom;
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
 * version 3, little-endian:
 *
 *   header    magic "VJRH" u32 | version u32 = 3 | generation u64 | salt u64 | previous end u64
 *   record*   magic "VJRL" u32 | payload length u32 | crc32c(payload) u32 | payload
 *   payload   generation u64 | salt u64 | forced u64 | type u8 | device root record id u64 | a u64 |
 *             b u64 | data...
 *             WRITE: a = offset, data = the bytes (past the size, the size grows to its end)
 *             ZERO:  a = offset, b = length           SIZE:  a = new size (a truncate)
 *
 * Version 2 (header without salt; payload without salt and forced) is read, never written: a
 * store opened on it replays it, and its first checkpoint starts a segment of version 3.
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
 * generation and its salt, so what an older use left after the end of the current records is
 * not replayed; neither is a record that is torn or fails its checksum, nor anything after it.
 * A flush returned only after its records were forced, so a torn tail is never a flushed record.
 *
 * Corruption is told from a crash. After a power cut, records past a torn one may be intact
 * (written back before the cut, never forced): replay rightly stops at the torn one. But a disk
 * that changes a record it had (a bad sector, a lost write) would look the same, and replay would
 * drop every flushed record from there on without a word. So each record carries {@code forced}:
 * the offset in its segment below which every record was on disk when it was appended (an
 * fdatasync that covered them had returned). Where replay stops, at P, the rest of the segment is
 * searched for an intact record of this use of the file; if one says forced > P, the record at P
 * had been forced and the disk changed it since: the store is refused, naming the offset and how
 * to accept the loss (no record appended after a crash can say so, as forced never passes the
 * position of the appending record). Across two live segments the same holds: a force after a
 * rotation forces the segment left first, so if a record of the newer one says it was forced
 * past its header, the older one's records, up to where they ended when the newer began (its
 * header says), were on disk. The search reads a guest's data too, where a guest may have
 * written what looks like a record: the salt, random for each use of a segment file and never in
 * a device's data, is what a guest cannot write. A corrupt record in the last batch a force
 * covered, with nothing appended after it, cannot be told from a torn tail, as in any log
 * without a second copy.
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
    static final int VERSION = 3;
    /** The version before this one, still read (replayed), never written. */
    static final int VERSION_2 = 2;
    private static final int HEADER_MAGIC = 0x4852_4A56; // "VJRH"
    private static final int RECORD_MAGIC = 0x4C52_4A56; // "VJRL"
    static final int HEADER_SIZE = 32;
    private static final int HEADER_SIZE_2 = 16;
    static final int RECORD_HEADER = 12;
    static final int PAYLOAD_FIXED = 49;
    private static final int PAYLOAD_FIXED_2 = 33;
    /** What the search past a torn or corrupt record reads at a time. */
    private static final int SEARCH_CHUNK = 1 << 20;
    private static final SecureRandom SALTS = new SecureRandom();
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
    /** The active segment's salt (its header's), which its records carry. Guarded by this. */
    private long salt;
    /**
     * The active segment's format version: VERSION, except after an open that replayed a segment
     * of version 2 and continues in it, until the first rotation (the store's open checkpoints, so
     * no append comes before it; one would be refused).
     * Guarded by this.
     */
    private int activeVersion = VERSION;
    /**
     * The offset in the active segment below which every record is on disk: an fdatasync of the
     * segment that began when its records ended there returned. Each record appended carries it.
     * Guarded by this.
     */
    private long forcedThrough = HEADER_SIZE;
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
    /** Set if the tail page could not be read back after a failed append or rotation: every append throws it. Guarded by this. */
    private StoreException tailLost;

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
            List<Header> live = new ArrayList<>(); // the segments the committed state does not hold
            for (int i = 0; i < 2; i++) {
                Header h = r.header(i);
                if (h != null && h.generation() >= committed) {
                    live.add(h);
                }
            }
            live.sort(Comparator.comparingLong(Header::generation));
            // every check before anything is replayed: a refused log has changed nothing
            List<Scan> scans = new ArrayList<>();
            for (Header seg : live) {
                scans.add(r.check(seg));
            }
            if (live.size() == 2) {
                r.refuseIfCutBeforeTheNext(live.get(0), scans.get(0), live.get(1), scans.get(1));
            }
            long[] count = new long[1];
            long end = 0;
            for (Header seg : live) {
                end = r.chain(seg, (type, root, a, b, data) -> {
                    replay.apply(type, root, a, b, data);
                    count[0]++;
                }).end();
            }
            replayed[0] = count[0];
            // appends continue in the newest segment until the caller's checkpoint rotates
            if (live.isEmpty()) {
                r.writeHeader(committed, 0);
            } else {
                Header last = live.get(live.size() - 1);
                r.generation = last.generation();
                r.salt = last.salt();
                r.activeVersion = last.version();
                r.position = end;
                r.forcedThrough = HEADER_SIZE; // what this open read may not be on disk (a kill -9 left it cached)
                r.loadTail();
                if (last.version() != VERSION) {
                    log.info("redo log {} is of version {}: replayed; the next checkpoint starts a segment of "
                            + "version {}", segmentFile(base, last.file()), last.version(), VERSION);
                }
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

    /**
     * A segment's header: which use of file {@code file} it is, in which format, with which salt,
     * and where the records of the segment before it ended when it began (both 0 in version 2).
     */
    private record Header(int file, long generation, int version, long salt, long previousEnd) {
        int size() {
            return version == VERSION ? HEADER_SIZE : HEADER_SIZE_2;
        }

        int payloadFixed() {
            return version == VERSION ? PAYLOAD_FIXED : PAYLOAD_FIXED_2;
        }
    }

    /** Segment {@code i}'s header; null if it has none (new, or a header torn in a rotation). */
    private Header header(int i) throws IOException, StoreException {
        if (segments[i].size() < HEADER_SIZE_2) {
            return null;
        }
        ByteBuffer h = read(i, 0, HEADER_SIZE_2);
        int magic = h.getInt();
        int version = h.getInt();
        long gen = h.getLong();
        if (magic != HEADER_MAGIC) {
            if (magic != 0) {
                log.warn("redo log {} has no valid header; no flushed record can be in it (a header reaches the "
                        + "disk with the first force of its segment), so it is reused", segmentFile(base, i));
            }
            return null;
        }
        if (version == VERSION_2) {
            return new Header(i, gen, version, 0, 0);
        }
        if (version != VERSION || segments[i].size() < HEADER_SIZE) {
            throw new StoreException(StoreException.EIO, "refusing redo log " + segmentFile(base, i) + ": version "
                    + version + ", this vmfuse reads " + VERSION_2 + " and " + VERSION + "; it is left as it is");
        }
        ByteBuffer rest = read(i, HEADER_SIZE_2, HEADER_SIZE - HEADER_SIZE_2);
        return new Header(i, gen, version, rest.getLong(), rest.getLong());
    }

    /** Where a segment's intact records end, and the most any intact record of it says its segment was forced through. */
    private record Scan(long end, long maxForced) {}

    /**
     * Where segment {@code h}'s intact records end, and the most any record of it says: refuses
     * the log (EIO) if a record past that end says the record there had been forced.
     */
    private Scan check(Header h) throws IOException, StoreException {
        Scan chain = chain(h, (type, root, a, b, data) -> { });
        if (h.version() != VERSION) {
            return chain;
        }
        long found = refuseIfForcedPast(h, chain.end(), segments[h.file()].size());
        return new Scan(chain.end(), Math.max(chain.maxForced(), found));
    }

    /** Replays segment {@code h}'s intact records, one after the other, into {@code replay}; where they end. */
    private Scan chain(Header h, Replay replay) throws IOException, StoreException {
        int i = h.file();
        long size = segments[i].size();
        long pos = h.size();
        long maxForced = 0;
        CRC32C crc = new CRC32C();
        while (pos + RECORD_HEADER <= size) {
            ByteBuffer rh = read(i, pos, RECORD_HEADER);
            int rmagic = rh.getInt();
            int len = rh.getInt();
            int sum = rh.getInt();
            if (rmagic != RECORD_MAGIC || len < h.payloadFixed() || len > h.payloadFixed() + MAX_DATA
                    || pos + RECORD_HEADER + len > size) {
                break; // the end, or a torn record
            }
            ByteBuffer p = read(i, pos + RECORD_HEADER, len);
            crc.reset();
            crc.update(p.duplicate());
            if ((int) crc.getValue() != sum || p.getLong() != h.generation()) {
                break; // torn, corrupt, or left by an older use of this file
            }
            if (h.version() == VERSION) {
                if (p.getLong() != h.salt()) {
                    break; // not of this use of the file
                }
                maxForced = Math.max(maxForced, p.getLong());
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
        return new Scan(pos, maxForced);
    }

    /**
     * The older of two live segments, {@code older}, must hold its records up to where they ended
     * when the newer one began, if a force of the newer one returned: a force after a rotation
     * forces the segment it left first (see {@link #force}), so a record of the newer segment
     * saying it was forced past its header means every record of the older one was on disk. If
     * they end before, the disk changed one, and replaying the newer segment over what is left
     * would drop flushes without a word (a review found the search within one segment blind to
     * it). Not checked where the older file ends where its records end: the remedy leaves it so.
     */
    private void refuseIfCutBeforeTheNext(Header older, Scan olderScan, Header newer, Scan newerScan)
            throws IOException, StoreException {
        long end = olderScan.end();
        if (newer.version() != VERSION || newer.previousEnd() <= end || newerScan.maxForced() <= HEADER_SIZE
                || segments[older.file()].size() == end) {
            return;
        }
        throw corrupt(older.file(), end, "they ended at offset " + newer.previousEnd() + " when the next segment, "
                + segmentFile(base, newer.file()) + ", began, and that one was forced since, with every record before it");
    }

    /**
     * The refusal of segment {@code i}, whose intact records end at {@code end}, though {@code
     * proof} shows the record there was forced; with the command that accepts the loss.
     */
    private StoreException corrupt(int i, long end, String proof) {
        Path file = segmentFile(base, i);
        return new StoreException(StoreException.EIO, "refusing redo log " + file + ": it is corrupt. Its records end "
                + "at offset " + end + " with one that is torn or fails its checksum, but " + proof + ": a flushed "
                + "record is damaged, and records of flushes after it would be lost without a word. Nothing was "
                + "changed. To open the store without the records of " + file + " from offset " + end + " on (the "
                + "journal devices they wrote lose those writes: check the filesystems whose journals they are, e.g. "
                + "e2fsck -f), cut the segment there: truncate -s " + end + " " + file);
    }

    /**
     * Searches segment {@code h} from just past {@code end}, where its intact records end, to
     * {@code size} for an intact record of this use of the file (its generation and salt, its
     * checksum) that was appended after the log was forced past {@code end}: then the record at
     * {@code end} was on disk, and the disk changed it. Records are found at any byte, as a
     * corrupt length cannot be followed; a candidate is dismissed by its salt before its payload
     * is read. Returns the most any record found says the segment was forced through.
     */
    private long refuseIfForcedPast(Header h, long end, long size) throws IOException, StoreException {
        int i = h.file();
        int probe = RECORD_HEADER + 16; // magic, length, checksum; generation, salt
        ByteBuffer chunk = ByteBuffer.allocate(SEARCH_CHUNK + probe).order(ByteOrder.LITTLE_ENDIAN);
        CRC32C crc = new CRC32C();
        long maxForced = 0;
        for (long at = end + 1; at + RECORD_HEADER + PAYLOAD_FIXED <= size; at += SEARCH_CHUNK) {
            chunk.clear().limit((int) Math.min(chunk.capacity(), size - at));
            while (chunk.hasRemaining()) {
                if (segments[i].read(chunk, at + chunk.position()) < 0) {
                    throw new IOException("unexpected end of " + segmentFile(base, i));
                }
            }
            int last = Math.min(SEARCH_CHUNK - 1, chunk.limit() - probe); // the next chunk starts at SEARCH_CHUNK
            for (int k = 0; k <= last; k++) {
                if (chunk.getInt(k) != RECORD_MAGIC || chunk.getLong(k + RECORD_HEADER + 8) != h.salt()
                        || chunk.getLong(k + RECORD_HEADER) != h.generation()) {
                    continue;
                }
                long q = at + k;
                int len = chunk.getInt(k + 4);
                if (len < PAYLOAD_FIXED || len > PAYLOAD_FIXED + MAX_DATA || q + RECORD_HEADER + len > size) {
                    continue;
                }
                ByteBuffer p = read(i, q + RECORD_HEADER, len);
                crc.reset();
                crc.update(p.duplicate());
                if ((int) crc.getValue() != chunk.getInt(k + 8)) {
                    continue;
                }
                long forced = p.getLong(16);
                maxForced = Math.max(maxForced, forced);
                if (forced > end) {
                    throw corrupt(i, end, "the record at offset " + q + " was appended after the log was forced "
                            + "through offset " + forced);
                }
            }
        }
        return maxForced;
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
        append(type, root, a, b, data == null ? null : ByteBuffer.wrap(data), off, len);
    }

    /** As above, the data {@code len} bytes of {@code data} from its index {@code off} (its position is not used or moved). */
    synchronized void append(byte type, long root, long a, long b, ByteBuffer data, int off, int len)
            throws StoreException {
        if (tailLost != null) {
            throw tailLost;
        }
        if (!preallocated[(int) (generation % 2)]) {
            preallocateActive();
        }
        if (len <= MAX_DATA || type != WRITE) {
            appendOne(type, root, a, b, data, off, len);
            return;
        }
        // a long write, as several records: if one fails, the ones before it are taken back, so that
        // the log holds the whole write or none of it (a review found a 4 MiB write past a device's
        // end, failed at its second record, grown by its first at the next replay). No force came
        // between them: this monitor is held throughout, and a force counts what it began with.
        long startPosition = position;
        long startTail = tailStart;
        long startAppended = appended;
        try {
            while (len > MAX_DATA) {
                appendOne(type, root, a, b, data, off, MAX_DATA);
                a += MAX_DATA;
                off += MAX_DATA;
                len -= MAX_DATA;
            }
            appendOne(type, root, a, b, data, off, len);
        } catch (StoreException e) {
            if (appended != startAppended) {
                position = startPosition;
                tailStart = startTail;
                appended = startAppended;
                takeBack(startPosition, e);
                restoreTail(e);
            }
            throw e;
        }
    }

    /**
     * Reads the tail page back from the file after an append or a rotation that failed left other
     * bytes in the buffer. If it cannot be read, appends are refused until the store is opened
     * again: the next would write that buffer over the last page, records already forced with it.
     */
    private void restoreTail(Exception failure) {
        try {
            loadTail();
        } catch (IOException e) {
            failure.addSuppressed(e);
            tailLost = new StoreException(StoreException.EIO, "redo log " + base + ": its last page cannot be read "
                    + "back (" + e.getMessage() + "); no change of a flush-mode device is taken until the store is "
                    + "opened again (by its next checkpoint, or vmfuse journal reopen)", e);
            log.error("redo log {}: its last page cannot be read back ({}); appends are refused until the store is "
                    + "opened again", base, e.getMessage());
        }
    }

    /**
     * Zeros the magic of the record at {@code at}, one an append that failed may have left whole
     * on the disk (the first of a long write that failed part way; or one whose write failed
     * after its bytes went out): a replay before the next append wrote over it would apply a
     * write its guest was told failed (found once reads could fail: with the tail page not read
     * back, no append came after, and the next open replayed part of a failed write). Not
     * forced: the next force, or the next append over it, makes it so; the record was never
     * flushed either.
     */
    private void takeBack(long at, Exception failure) {
        try {
            active().writeFully(ByteBuffer.allocate(4), at);
        } catch (IOException e) { // the next append writes over it; until then a replay would apply it
            failure.addSuppressed(e);
            log.warn("redo log {}: a failed append cannot be taken back ({}); the next append writes over it", base,
                    e.getMessage());
        }
    }

    private void appendOne(byte type, long root, long a, long b, ByteBuffer data, int off, int len) throws StoreException {
        if (len > MAX_DATA) {
            throw new IllegalArgumentException("a record of " + len + " bytes of data; at most " + MAX_DATA);
        }
        if (activeVersion != VERSION) {
            throw new IllegalStateException("an append to redo log " + base + " before the rotation out of its "
                    + "segment of version " + activeVersion);
        }
        int payload = PAYLOAD_FIXED + len;
        int head = (int) (position - tailStart); // the tail page's bytes, written again
        ByteBuffer t = tail();
        t.clear().position(head + RECORD_HEADER);
        t.putLong(generation).putLong(salt).putLong(forcedThrough).put(type).putLong(root).putLong(a).putLong(b);
        if (len > 0) {
            t.put(t.position(), data, off, len).position(t.position() + len);
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
            StoreException se = new StoreException(StoreException.errno(e), "cannot append to redo log "
                    + segmentFile(base, (int) (generation % 2)) + ": " + e.getMessage(), e);
            takeBack(position, se); // a short write may have put all of the record out, and only its zeros failed
            throw se;
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
        long through;
        long of;
        synchronized (this) {
            if (broken != null) {
                throw broken;
            }
            ch = active();
            through = position;
            of = generation;
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
            if (generation == of) {
                forcedThrough = Math.max(forcedThrough, through);
            }
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
    /** Whether a force failed, or the tail page was lost: the log takes no more flushes, or no appends, until the store opens it again. */
    synchronized boolean refusing() {
        return broken != null || tailLost != null;
    }

    synchronized boolean allDurable() {
        return broken == null && forcing == 0 && durable == appended;
    }

    /** Records the first failed fdatasync; the error every force returns from now on. */
    private StoreException markBroken(IOException e) {
        synchronized (this) {
            if (broken == null) {
                broken = new StoreException(StoreException.EIO, "an fdatasync of redo log " + base + " failed ("
                        + e.getMessage() + "): records appended before it may not be on disk, so no flush of a "
                        + "flush-mode device succeeds until the store is opened again (by its next checkpoint, or "
                        + "vmfuse journal reopen)", e);
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
        try {
            writeHeader(next, position);
        } catch (IOException e) {
            // appends go on in the segment they were in: its tail page back into the buffer the header took
            restoreTail(e);
            throw new StoreException(StoreException.EIO, "cannot rotate redo log " + base + ": " + e.getMessage(), e);
        }
        // the segment reused was committed before this rotation: whatever it lacked on disk is moot
        rotatedAt = appended;
    }

    /**
     * Starts the active segment for generation {@code gen}: its header, with a new salt and where
     * the records of the segment before it end ({@code previousEnd}; 0 if unknown), alone in its
     * first page (not forced).
     */
    private void writeHeader(long gen, long previousEnd) throws IOException {
        long newSalt = SALTS.nextLong();
        ByteBuffer t = tail();
        t.clear();
        t.putInt(HEADER_MAGIC).putInt(VERSION).putLong(gen).putLong(newSalt).putLong(previousEnd);
        zero(t, HEADER_SIZE, PAGE);
        t.flip();
        DiskFile ch = segments[(int) (gen % 2)];
        while (t.hasRemaining()) {
            ch.write(t, t.position());
        }
        // the log's state changes once the header is written: a failed one leaves the segment it was in active
        generation = gen;
        salt = newSalt;
        activeVersion = VERSION;
        forcedThrough = HEADER_SIZE;
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
