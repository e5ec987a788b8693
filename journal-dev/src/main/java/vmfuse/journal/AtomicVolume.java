package vmfuse.journal;

import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.function.LongFunction;
import java.util.zip.CRC32C;

import org.eclipse.collections.impl.list.mutable.primitive.IntArrayList;
import org.eclipse.collections.impl.list.mutable.primitive.LongArrayList;
import org.eclipse.collections.impl.map.mutable.primitive.LongObjectHashMap;

import org.mapdb.DataInput2;
import org.mapdb.volume.Volume;

import vmfuse.durable.Disk;
import vmfuse.durable.DiskFile;

/*
 * A MapDB Volume (the file under MapDB's record store) whose sync() is atomic: after a crash at
 * any point, the file holds what it held at the end of one sync() or of the next, never a mix.
 *
 * Why: MapDB 3.1's transactional store (StoreWAL) never replays its write-ahead log when it opens,
 * and the log lacks the index values a commit writes, so a process killed while a commit writes
 * the main file leaves it half-updated: records of committed transactions missing or wrong
 * (measured: 9 in 160 kills mid-commit; FACTS.md). Its plain store (StoreDirect) writes in place
 * and calls Volume.sync() at each commit; under this volume that is a commit.
 *
 * How (a redo journal of whole pages, as ext4's data=journal or SQLite's WAL, kept to one commit):
 *   - writes go to copies of the 4 KiB pages they touch, in memory; reads see them;
 *   - sync() writes every changed page to the commit file (FILE.commit), with the file's new
 *     length and a checksum, forces it, then writes the pages into FILE, forces it, and
 *     invalidates the commit file (its magic zeroed, forced). The commit file is created once,
 *     its directory synced, and never deleted: a delete is durable only after a directory sync,
 *     and a stale commit file brought back by a power cut would replay old pages over newer
 *     ones;
 *   - a complete commit file is never written over: if writing FILE failed after it was
 *     complete, FILE is a mix and that file is the only record of the rest, so the next sync
 *     writes its commit file (a superset: the changed pages stay changed until FILE holds them)
 *     as FILE.commit.next, forces it and renames it over FILE.commit, then syncs the directory;
 *   - except pages wholly past FILE's end as the last sync left it (where a store that grows
 *     puts its new records): nothing committed is in them, so sync() writes them straight into
 *     FILE and forces it before the commit file. New data is written once, not twice. A crash
 *     before the commit file is complete leaves them past the committed length, which
 *     FILE.length records (written after each commit is applied): opening cuts FILE back to it,
 *     so what MapDB finds past its committed end is zeros, as before. (After a sync that failed
 *     once its commit file was complete, that commit's new pages belong to it: the next sync
 *     writes straight into FILE only past the pending commit's end.)
 *   - opening finds a complete commit file (its checksum holds) and writes it into FILE again
 *     (idempotent); an incomplete one was never applied, and is dropped (and FILE cut back to
 *     the length in FILE.length). A FILE.commit.next is a rename that did not happen: FILE.commit
 *     is still the complete one, and the .next is deleted.
 *
 * Every file is written through a Disk (vmfuse.durable): tests put a disk under it that fails
 * any call or loses power at any point.
 *
 * Commit file, little-endian: magic "VJPC" u32 | version u32 = 2 | length u64 | pages u32 |
 * then per page: page number u64, with bit 63 set for a page of zeros, else followed by its
 * 4096 bytes | then crc32c of everything before, u32. Length file, little-endian: magic "VJPL"
 * u32 | committed length u64 | crc32c of the 12 bytes before, u32.
 *
 * Pages of zeros: the journal store zeroes a block's record before it deletes it, so a deleted
 * device, a punch or a shrink leaves whole pages of zeros, which are punched out of FILE (with
 * the HolePunch the owner gives) instead of written: the store's size on disk goes down. In
 * memory such a page is one shared marker, so deleting a large device costs little heap.
 *
 * Memory: the pages changed since the last sync (off the heap, see Arena), so the owner syncs
 * every few MiB of changes; and a cache of 64 committed pages that small reads touched (MapDB's
 * metadata), emptied at each sync.
 * Thread-safe (every method holds the monitor).
 */
public final class AtomicVolume extends Volume {
    static final int PAGE = 4096;
    private static final int MAGIC = 0x4350_4A56; // "VJPC"
    private static final int VERSION = 2;
    private static final int LENGTH_MAGIC = 0x4C50_4A56; // "VJPL"
    private static final int HEADER = 20;
    private static final long ZERO_FLAG = 1L << 63;
    private static final byte[] ZEROS = new byte[PAGE];
    /** The marker of a dirty page of zeros (never written to). */
    private static final ByteBuffer ZERO_PAGE = ByteBuffer.wrap(new byte[PAGE]).asReadOnlyBuffer();
    /** Pages the clean cache keeps (256 KiB): MapDB's header (8 pages) and the index pages of a commit's records. */
    static final int CLEAN_PAGES = 64;
    /** Reads shorter than this go through the clean cache; longer ones (a block's record) straight to FILE. */
    private static final int SMALL_READ = 512;

    private final Disk disk;
    private final Path file;
    /** See {@link #blocks(BlockFile)}; null: none. */
    private BlockFile blocks;
    private final Path commitFile;
    private final DiskFile main;
    /** FILE again, for the whole pages writeFreshPages writes (Disk#openForPageWrites); opened by the first. */
    private DiskFile pageHandle;
    /**
     * Pages changed since the last sync, by page number: pages of `arena`, or ZERO_PAGE. A hash
     * map of primitive keys, put in order only at a sync ({@link #sortedDirty}): MapDB reads and
     * writes these pages a few bytes at a time, and a TreeMap of boxed page numbers made each
     * access a dozen compares of boxed Longs (a third of a checkpoint's CPU, with the map of the
     * device's dirty blocks; JFR, close-mode sequential writes in process).
     */
    private final LongObjectHashMap<ByteBuffer> dirty = new LongObjectHashMap<>();
    /**
     * Fresh pages (wholly past FILE's committed end) handed to the {@link #writer} before the
     * sync, as they were then: a later change to one copies it back into {@code dirty}, which
     * reads look in first. FILE may hold them (or not yet, or only some) until the sync, which
     * waits for the writer, then forces FILE. Kept until the sync ends (their memory is the
     * arena's), so reads never go to FILE for them.
     */
    private final LongObjectHashMap<ByteBuffer> writing = new LongObjectHashMap<>();
    /** Pages that became dirty past FILE's committed end since the last hand-off (some may be gone since). */
    private final LongArrayList freshDirtied = new LongArrayList();
    /**
     * Writes handed-off fresh pages into FILE while MapDB goes on (the journal store's drain puts
     * the next blocks): a sync used to write all of a commit's new pages itself, and on the
     * machine this was measured on that was 0.8 of a 2.1 s checkpoint of 512 MiB. One thread,
     * started at the first hand-off; a daemon, stopped by close().
     */
    private ExecutorService writer;
    /** Makes the writer's thread (null: the default); for tests, one that cannot be had. */
    ThreadFactory writerThreads;
    /** The last hand-off given to the writer (null: none since the last sync). */
    private java.util.concurrent.Future<IOException> handedOff;
    /** The writer's buffer: it writes to FILE's page handle (O_DIRECT) as the sync does, beside it. */
    private ByteBuffer writerStaging;
    /** No hand-off until the next sync: the writer could not be made ready (see writerReady). */
    private boolean handOffsOff;
    /** Fresh pages a hand-off takes at least: 1 MiB, one write of the batch. */
    static final int HANDOFF_PAGES = 256;
    /** The highest fresh pages are left out of a hand-off: MapDB may still be filling them. */
    private static final int HANDOFF_MARGIN = 2;
    private final Arena arena = new Arena();
    /**
     * Committed pages small reads touched lately, as readCommitted would read them (FILE's bytes,
     * zeros past `readable`), least recently used dropped past CLEAN_PAGES. MapDB reads its
     * metadata a few bytes at a time: at every commit its header checksum reads 32 KiB four bytes
     * at a time, 8,192 preads where 8 will do (measured: 2.2 preads per 4 KiB block of a
     * sequential close-mode write). Emptied by every sync, the one writer of FILE.
     */
    private final Map<Long, byte[]> clean = new java.util.LinkedHashMap<>(2 * CLEAN_PAGES, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<Long, byte[]> eldest) {
            return size() > CLEAN_PAGES;
        }
    };
    /** The buffer of every Batch of this volume's syncs (allocated at the first). */
    private ByteBuffer staging;
    /** Length as MapDB sees it; FILE is cut or extended to it at sync. */
    private long length;
    /** FILE's length at the last sync: its committed part. */
    private long fileLength;
    /** FILE's length now (beyond fileLength after fresh pages were written by a sync that then failed). */
    private long readable;
    /** The committed length FILE.length holds (open() made it fileLength). */
    private long lengthRecorded;
    /** FILE.commit is complete and FILE may not hold all of it yet (a sync failed after writing it). */
    private boolean commitPending;
    /** See {@link #durableCommits()}. */
    private long durableCommits;
    /**
     * The length the complete FILE.commit records, while commitPending: the pending commit's
     * fresh pages, below it, are in FILE and part of that commit (an open finishes it), so they
     * are no longer fresh (see {@link #freshFrom}).
     */
    private long pendingLength;
    /** sync() does nothing: the owner makes several of the caller's commits one (see holdSyncs). */
    private boolean syncsHeld;
    /** Bytes a sync writes between forces of a file; 0: forced once, at its end (see forceEvery). */
    private int forceStep;

    private AtomicVolume(Disk disk, Path file, DiskFile main) throws IOException {
        this.disk = disk;
        this.file = file;
        this.commitFile = commitFile(file);
        this.main = main;
        this.fileLength = main.size();
        this.readable = fileLength;
        this.lengthRecorded = fileLength;
        this.length = fileLength;
    }

    static Path commitFile(Path file) {
        return file.resolveSibling(file.getFileName() + ".commit");
    }

    static Path nextCommitFile(Path file) {
        return file.resolveSibling(file.getFileName() + ".commit.next");
    }

    static Path lengthFile(Path file) {
        return file.resolveSibling(file.getFileName() + ".length");
    }

    /** Records {@code length} as FILE's committed length, forced. */
    private static void writeLength(Disk disk, Path file, long length) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putInt(LENGTH_MAGIC).putLong(length);
        CRC32C crc = new CRC32C();
        crc.update(b.array(), 0, 12);
        b.putInt((int) crc.getValue()).flip();
        try (DiskFile f = disk.open(lengthFile(file), true)) {
            f.writeFully(b, 0);
            f.force(false);
        }
    }

    /** FILE's committed length as FILE.length records it; -1 if there is no such record, or it is not whole. */
    private static long readLength(Disk disk, Path file) throws IOException {
        Path lf = lengthFile(file);
        if (!disk.exists(lf)) {
            return -1;
        }
        byte[] a = disk.readAll(lf);
        if (a.length < 16) {
            return -1;
        }
        ByteBuffer b = ByteBuffer.wrap(a).order(ByteOrder.LITTLE_ENDIAN);
        CRC32C crc = new CRC32C();
        crc.update(a, 0, 12);
        return b.getInt(0) == LENGTH_MAGIC && b.getInt(12) == (int) crc.getValue() ? b.getLong(4) : -1;
    }

    /**
     * Finishes a commit a crash interrupted: if FILE.commit is complete, writes its pages into
     * FILE (pages of zeros punched where the disk can) and invalidates it; an incomplete one is
     * left for the next sync to write over. Returns the pages applied (0 if none).
     */
    static int recover(Disk disk, Path file) throws IOException {
        Path cf = commitFile(file);
        if (disk.exists(nextCommitFile(file))) { // its rename never happened: FILE.commit is the whole one
            disk.delete(nextCommitFile(file));
            disk.syncDirectory(file.toAbsolutePath().getParent());
        }
        if (!disk.exists(cf)) {
            cutToCommittedLength(disk, file);
            return 0;
        }
        byte[] log = disk.readAll(cf);
        int applied = 0;
        if (log.length >= HEADER + 4) {
            ByteBuffer b = ByteBuffer.wrap(log).order(ByteOrder.LITTLE_ENDIAN);
            CRC32C crc = new CRC32C();
            crc.update(log, 0, log.length - 4);
            if (b.getInt(0) == MAGIC && b.getInt(4) == VERSION && (int) crc.getValue() == b.getInt(log.length - 4)) {
                long len = b.getLong(8);
                int pages = b.getInt(16);
                TreeMap<Long, ByteBuffer> changes = new TreeMap<>();
                b.position(HEADER);
                for (int i = 0; i < pages; i++) {
                    long entry = b.getLong();
                    if ((entry & ZERO_FLAG) != 0) {
                        changes.put(entry & ~ZERO_FLAG, ZERO_PAGE);
                    } else {
                        changes.put(entry, ByteBuffer.wrap(log, b.position(), PAGE).slice());
                        b.position(b.position() + PAGE);
                    }
                }
                if (b.position() != log.length - 4) {
                    throw new IOException("commit file " + cf + " is inconsistent: " + pages + " pages end at "
                            + b.position() + " of " + log.length + "; it is left as it is");
                }
                try (DiskFile f = disk.open(file, false)) {
                    apply(new Batch(f, Batch.buffer()), changes.keySet().stream().mapToLong(Long::longValue).toArray(),
                            changes::get, len);
                }
                writeLength(disk, file, len);
                invalidate(disk, cf);
                applied = pages;
            }
        }
        if (applied == 0) {
            cutToCommittedLength(disk, file);
        }
        return applied;
    }

    /**
     * Makes a commit file that FILE holds whole no commit: its magic zeroed and, if a large commit
     * made it large, cut back to a page (it stays, so the next commit writes into it), forced.
     */
    private static void invalidate(Disk disk, Path commitFile) throws IOException {
        try (DiskFile f = disk.open(commitFile, false)) {
            f.writeFully(ByteBuffer.allocate(4), 0);
            if (f.size() > Batch.SIZE) {
                f.truncate(PAGE);
            }
            f.force(false);
        }
    }

    /** Cuts off what a sync a crash interrupted wrote past FILE's committed length. */
    private static void cutToCommittedLength(Disk disk, Path file) throws IOException {
        long committed = readLength(disk, file);
        if (committed >= 0 && disk.exists(file)) {
            try (DiskFile f = disk.open(file, false)) {
                if (f.size() > committed) {
                    f.truncate(committed);
                    f.force(true);
                }
            }
        }
    }

    /**
     * Writes the changed pages (page numbers in ascending order, and their contents) into the
     * file, punches its runs of zero pages, sets its length, forces it.
     */
    private static void apply(Batch out, long[] pages, LongFunction<ByteBuffer> changes, long length) throws IOException {
        DiskFile ch = out.file();
        long runStart = -1;
        long runEnd = -1;
        for (long page : pages) {
            long pos = page * PAGE;
            ByteBuffer contents = changes.apply(page);
            if (contents == ZERO_PAGE) {
                if (pos != runEnd) {
                    out.flush();
                    punchRun(ch, runStart, runEnd);
                    runStart = pos;
                }
                runEnd = pos + PAGE;
            } else {
                out.write(pos, contents.duplicate());
            }
        }
        out.flush();
        if (ch.size() > length) {
            ch.truncate(length);
        } else if (ch.size() < length) {
            out.write(length - 1, ByteBuffer.allocate(1));
            out.flush();
        }
        punchRun(ch, runStart, Math.min(runEnd, length));
        ch.force(true);
    }

    private static void punchRun(DiskFile ch, long start, long end) throws IOException {
        if (start >= 0 && end > start && !ch.punch(start, end - start)) {
            ByteBuffer zeros = ByteBuffer.allocate(PAGE);
            for (long pos = start; pos < end; pos += PAGE) {
                ch.writeFully(zeros.clear(), pos);
            }
        }
    }

    /**
     * Opens FILE on {@code disk} (created if absent), after {@link #recover}. FILE, FILE.length and
     * FILE.commit exist, durably (their directory synced), before it returns.
     */
    static AtomicVolume open(Disk disk, Path file) throws IOException {
        recover(disk, file);
        boolean created = !disk.exists(file) || !disk.exists(lengthFile(file)) || !disk.exists(commitFile(file));
        DiskFile ch = disk.open(file, true);
        try {
            long recorded = readLength(disk, file);
            if (recorded > ch.size()) {
                // recovered, FILE is never shorter than its last commit: cut short from outside
                // (a copy that stopped, a restore); reading on would serve zeros for its pages
                throw new IOException(file + " holds " + ch.size() + " bytes but its last commit made it " + recorded
                        + " (" + lengthFile(file).getFileName() + "): it was cut short; it is left as it is");
            }
            if (recorded != ch.size()) {
                writeLength(disk, file, ch.size()); // before any sync writes past it
            }
            if (!disk.exists(commitFile(file))) {
                disk.open(commitFile(file), true).close();
            }
            if (created) {
                disk.syncDirectory(file.toAbsolutePath().getParent());
            }
        } catch (IOException e) {
            ch.close();
            throw e;
        }
        return new AtomicVolume(disk, file, ch);
    }

    /**
     * Positional writes gathered in one direct buffer: a write that continues the previous one
     * joins it, and each run goes out in one pwrite when it breaks, fills the buffer, or at
     * flush(). A commit writes thousands of pages, most of them consecutive; written one by one
     * from heap arrays, each was a syscall and one more copy by the JDK (the checkpoint's drain
     * ran at about 130 MiB/s that way, measured with strace: one 4 KiB pwrite every ~30 µs).
     *
     * <p>With a {@code step} ({@link #forceEvery}), runs are at most that long, and the file is
     * forced before a run that would leave more than a step of it written and not forced (its
     * last step is forced by the caller, as a whole file is without a step).
     */
    static final class Batch {
        static final int SIZE = 1 << 20;
        private final DiskFile ch;
        private final ByteBuffer buf;
        private final int step;
        private final int room;
        private long start = -1; // FILE position of buf's first byte; -1: empty
        private long unforced; // bytes written since this batch last forced the file

        Batch(DiskFile ch, ByteBuffer buf) {
            this(ch, buf, 0);
        }

        Batch(DiskFile ch, ByteBuffer buf, int step) {
            this.ch = ch;
            this.step = step;
            this.room = step > 0 ? Math.min(step, buf.capacity()) : buf.capacity();
            this.buf = buf.clear().limit(room);
        }

        static ByteBuffer buffer() {
            return Disk.alignedBuffer(SIZE); // aligned: it is written to FILE's page handle (O_DIRECT)
        }

        DiskFile file() {
            return ch;
        }

        void write(long pos, byte[] b) throws IOException {
            write(pos, ByteBuffer.wrap(b));
        }

        void write(long pos, ByteBuffer b) throws IOException {
            if (start >= 0 && (pos != start + buf.position() || buf.remaining() < b.remaining())) {
                flush();
            }
            if (b.remaining() > room) {
                int n = b.remaining();
                beforeWriting(n);
                ch.writeFully(b, pos);
                unforced += n;
                return;
            }
            if (start < 0) {
                start = pos;
            }
            buf.put(b);
        }

        void flush() throws IOException {
            if (start >= 0) {
                buf.flip();
                int n = buf.remaining();
                beforeWriting(n);
                ch.writeFully(buf, start);
                unforced += n;
                buf.clear().limit(room);
                start = -1;
            }
        }

        /** With a step: forces what was written, if {@code n} bytes more would leave more than a step unforced. */
        private void beforeWriting(int n) throws IOException {
            if (step > 0 && unforced > 0 && unforced + n > step) {
                ch.force(false);
                unforced = 0;
            }
        }
    }

    /**
     * The pages of one commit, off the Java heap: 4 KiB slices of direct 1 MiB chunks, handed out
     * in order and all taken back once a sync has written them (a commit holds up to tens of MiB
     * of pages until it ends; as byte arrays they outlived young collections, filled the old
     * generation and made full collections that stopped every thread: 12 in a 512 MiB write).
     * Chunks beyond KEEP are let go at that point. Guarded by the volume.
     */
    private static final class Arena {
        private static final int CHUNK = 1 << 20;
        private static final int KEEP = 32;
        private final java.util.ArrayList<ByteBuffer> chunks = new java.util.ArrayList<>();
        private int used; // pages handed out since the last reset
        private boolean heapOnly; // direct memory ran out during this commit

        /**
         * A page's worth of memory, its contents undefined. On the heap if the JVM's direct memory
         * is full (journal blocks waiting in memory may have taken it): a commit never fails for it.
         */
        ByteBuffer page() {
            if (heapOnly) {
                return ByteBuffer.allocate(PAGE);
            }
            int chunk = used / (CHUNK / PAGE);
            if (chunk == chunks.size()) {
                try {
                    chunks.add(ByteBuffer.allocateDirect(CHUNK));
                } catch (OutOfMemoryError e) { // after a collection and half a second of retries in the JDK
                    heapOnly = true; // for the rest of this commit: one such wait, not one per page
                    return ByteBuffer.allocate(PAGE);
                }
            }
            ByteBuffer p = chunks.get(chunk).slice((used % (CHUNK / PAGE)) * PAGE, PAGE);
            used++;
            return p;
        }

        /** Every page handed out is free again (nothing refers to them). */
        void reset() {
            used = 0;
            heapOnly = false;
            while (chunks.size() > KEEP) {
                chunks.remove(chunks.size() - 1);
            }
        }
    }

    /** A new dirty page, filled with zeros. */
    private ByteBuffer zeroedPage() {
        return arena.page().put(0, ZEROS, 0, PAGE);
    }

    /** The page as it reads now, for writing: copied into {@code dirty} on first touch. */
    private ByteBuffer pageForWrite(long page) {
        ByteBuffer p = dirty.get(page);
        if (p == ZERO_PAGE) {
            p = zeroedPage();
            markDirty(page, p);
        } else if (p == null) {
            p = arena.page();
            ByteBuffer handed = writing.get(page);
            byte[] c;
            if (handed != null) {
                p.put(0, handed, 0, PAGE);
            } else if ((c = clean.get(page)) != null) {
                p.put(0, c, 0, PAGE);
            } else {
                readPage(page, p);
            }
            markDirty(page, p);
        }
        return p;
    }

    /**
     * Where fresh pages begin, those no commit holds and a sync may write straight into FILE:
     * FILE's committed end, or the end of a pending commit (complete in FILE.commit, not yet
     * wholly in FILE: a failed sync wrote its fresh pages, then its commit file, then failed),
     * whose fresh pages an open makes part of that commit. Written in place after that, one
     * would hold the next commit's bytes in the last one's state after a crash.
     */
    private long freshFrom() {
        return commitPending ? Math.max(fileLength, pendingLength) : fileLength;
    }

    /** Makes {@code contents} the page's dirty copy; a fresh page new to {@code dirty} is noted for a hand-off. */
    private void markDirty(long page, ByteBuffer contents) {
        if (dirty.put(page, contents) == null && page * PAGE >= freshFrom()) {
            freshDirtied.add(page);
        }
    }

    /** Reads a page of FILE into {@code into} (zeros past what FILE holds). */
    private void readPage(long page, ByteBuffer into) {
        long pos = page * PAGE;
        int have = (int) Math.max(0, Math.min(PAGE, readable - pos));
        ByteBuffer b = into.duplicate().clear().limit(have);
        try {
            while (b.hasRemaining()) {
                if (main.read(b, pos + b.position()) < 0) {
                    break;
                }
            }
        } catch (IOException e) {
            throw new PageReadFailed("cannot read " + file + ": " + e.getMessage(), e);
        }
        into.put(b.position(), ZEROS, 0, PAGE - b.position());
    }

    /**
     * A committed page could not be read. MapDB reads pages in the middle of its changes (a
     * delete reads the free list's page), and does not undo what it changed before: after this
     * its structures in memory may be half changed, and must not be committed.
     */
    static final class PageReadFailed extends UncheckedIOException {
        PageReadFailed(String message, IOException cause) {
            super(message, cause);
        }

        /** Whether {@code e}, or what caused it, is one. */
        static boolean in(Throwable e) {
            for (Throwable t = e; t != null; t = t.getCause()) {
                if (t instanceof PageReadFailed) {
                    return true;
                }
            }
            return false;
        }
    }

    @Override
    public synchronized void putData(long offset, byte[] src, int srcPos, int srcSize) {
        int done = 0;
        while (done < srcSize) {
            long pos = offset + done;
            int in = (int) (pos % PAGE);
            int n = Math.min(PAGE - in, srcSize - done);
            long pageNo = pos / PAGE;
            if (n == PAGE && isZero(src, srcPos + done, PAGE)) {
                markDirty(pageNo, ZERO_PAGE);
            } else if (n == PAGE) {
                ByteBuffer page = dirty.get(pageNo);
                if (page == null || page == ZERO_PAGE) {
                    page = arena.page(); // never a handed-off page's buffer: the writer may be reading it
                    markDirty(pageNo, page);
                }
                page.put(0, src, srcPos + done, PAGE);
            } else {
                ByteBuffer page = pageForWrite(pageNo);
                page.put(in, src, srcPos + done, n);
                if (page.mismatch(ZERO_PAGE) < 0) {
                    markDirty(pageNo, ZERO_PAGE);
                }
            }
            done += n;
        }
        length = Math.max(length, offset + srcSize);
        if (freshDirtied.size() >= HANDOFF_PAGES + HANDOFF_MARGIN && (handedOff == null || handedOff.isDone())) {
            handOff();
        }
    }

    /**
     * Gives the writer the fresh pages dirtied since the last hand-off (but the highest few, and
     * pages of zeros, which FILE reads as zeros there already) to write into FILE now, before
     * the sync. Nothing of it is committed, or even read back, until the sync: a crash before it
     * leaves them past FILE's committed length, cut off at open, as the sync's own fresh pages.
     */
    private void handOff() {
        if (!awaitHandOff()) { // the last one failed: its pages are back in dirty, for the sync
            handOffsOff = true;
            return;
        }
        if (!writerReady()) {
            return;
        }
        long top = freshDirtied.max();
        LongArrayList keep = new LongArrayList();
        LongArrayList pages = new LongArrayList();
        for (int i = 0; i < freshDirtied.size(); i++) {
            long page = freshDirtied.get(i);
            ByteBuffer contents = dirty.get(page);
            if (page > top - HANDOFF_MARGIN) {
                keep.add(page);
            } else if (contents != null && contents != ZERO_PAGE && page * PAGE >= freshFrom()) {
                pages.add(page);
            }
        }
        freshDirtied.clear();
        freshDirtied.addAll(keep);
        if (pages.isEmpty()) {
            return;
        }
        long[] sorted = pages.distinct().toSortedArray(); // a page dirtied again after a hand-off is listed twice
        ByteBuffer[] contents = new ByteBuffer[sorted.length];
        for (int i = 0; i < sorted.length; i++) {
            contents[i] = dirty.remove(sorted[i]);
            writing.put(sorted[i], contents[i]);
        }
        DiskFile to = pageHandle;
        int step = forceStep;
        Batch out = new Batch(to, writerStaging, step);
        Callable<IOException> write = () -> {
            try {
                for (int i = 0; i < sorted.length; i++) {
                    out.write(sorted[i] * PAGE, contents[i].duplicate());
                }
                out.flush();
                if (step > 0) { // in steps, as the sync's own writes: a flush of the same disk waits behind no more
                    to.force(false);
                }
                return null;
            } catch (IOException | RuntimeException e) {
                return e instanceof IOException io ? io : new IOException(e.toString(), e);
            }
        };
        try {
            handedOff = writer.submit(write);
        } catch (RejectedExecutionException e) { // its thread is there (writerReady): only if it was shut down
            takeBack();
            handOffsOff = true;
        }
    }

    /**
     * Whether hand-offs may go: the writer's thread and buffer and FILE's page handle are there
     * (made at the first). If one cannot be had (direct memory full: the journal's blocks may
     * hold it all), none until the next sync, which writes its fresh pages itself as before.
     */
    private boolean writerReady() {
        if (handOffsOff) {
            return false;
        }
        try {
            if (pageHandle == null) {
                pageHandle = disk.openForPageWrites(file);
            }
            if (writerStaging == null) {
                writerStaging = Batch.buffer();
            }
        } catch (IOException | OutOfMemoryError e) { // the sync writes them itself, and says why it could not
            handOffsOff = true;
            return false;
        }
        if (writer == null) {
            // its thread made now, where a failure (no thread to be had) leaves the pages to the
            // sync; made lazily by the first submit, it failed there with the pages handed over
            ThreadPoolExecutor w = new ThreadPoolExecutor(1, 1, 0, TimeUnit.MILLISECONDS, new LinkedBlockingQueue<>(),
                    writerThreads != null ? writerThreads : r -> {
                        Thread t = new Thread(r, "journal-pages " + file.getFileName());
                        t.setDaemon(true);
                        return t;
                    });
            boolean started;
            try {
                started = w.prestartCoreThread();
            } catch (OutOfMemoryError e) {
                started = false;
            }
            if (!started) {
                w.shutdown();
                handOffsOff = true;
                return false;
            }
            writer = w;
        }
        return true;
    }

    /**
     * Waits for the writer's last hand-off (not interruptibly: a sync that went on would write
     * the same pages beside it). If it failed, every page handed off goes back to {@code dirty}
     * (unless changed since), and false: the sync writes them itself, as it would have without a
     * writer.
     */
    private boolean awaitHandOff() {
        if (handedOff == null) {
            return true;
        }
        IOException failure;
        boolean interrupted = false;
        while (true) {
            try {
                failure = handedOff.get();
                break;
            } catch (InterruptedException e) {
                interrupted = true;
            } catch (java.util.concurrent.ExecutionException e) {
                failure = new IOException(e.getCause());
                break;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        handedOff = null;
        if (failure != null) {
            takeBack();
            return false;
        }
        return true;
    }

    /** Waits for the writer's last hand-off, as a sync does first; false if it failed. For tests. */
    synchronized boolean awaitWriter() {
        return awaitHandOff();
    }

    /** Every handed-off page back into {@code dirty}, unless a later change made a newer copy there. */
    private void takeBack() {
        writing.forEachKeyValue((page, contents) -> {
            if (!dirty.containsKey(page)) {
                dirty.put(page, contents);
            }
        });
        writing.clear();
    }

    private static boolean isZero(byte[] b, int from, int len) {
        return Arrays.mismatch(b, from, from + len, ZEROS, 0, len) < 0;
    }

    @Override
    public synchronized void getData(long offset, byte[] dst, int dstPos, int size) {
        int done = 0;
        while (done < size) {
            long pos = offset + done;
            int in = (int) (pos % PAGE);
            int n = Math.min(PAGE - in, size - done);
            ByteBuffer p = dirty.get(pos / PAGE);
            if (p == null) {
                p = writing.get(pos / PAGE);
            }
            if (p != null) {
                p.get(in, dst, dstPos + done, n);
            } else if (size < SMALL_READ) {
                System.arraycopy(cleanPage(pos / PAGE), in, dst, dstPos + done, n);
            } else {
                readCommitted(pos, dst, dstPos + done, n);
            }
            done += n;
        }
    }

    /** A committed page, from the clean cache or read into it. */
    private byte[] cleanPage(long page) {
        byte[] c = clean.get(page);
        if (c == null) {
            c = new byte[PAGE];
            readPage(page, ByteBuffer.wrap(c));
            clean.put(page, c);
        }
        return c;
    }

    /**
     * Reads bytes no sync has changed since, straight from FILE into {@code dst}: only those
     * asked (MapDB reads its header's fields a few bytes at a time, at every commit), zeros past
     * what FILE holds.
     */
    private void readCommitted(long pos, byte[] dst, int off, int n) {
        int have = (int) Math.max(0, Math.min(n, readable - pos));
        ByteBuffer b = ByteBuffer.wrap(dst, off, have);
        try {
            while (b.hasRemaining()) {
                if (main.read(b, pos + (b.position() - off)) < 0) {
                    break;
                }
            }
        } catch (IOException e) {
            throw new PageReadFailed("cannot read " + file + ": " + e.getMessage(), e);
        }
        Arrays.fill(dst, b.position(), off + n, (byte) 0);
    }

    @Override
    public void putData(long offset, ByteBuffer buf) {
        byte[] b = new byte[buf.remaining()];
        buf.get(b);
        putData(offset, b, 0, b.length);
    }

    @Override
    public void putLong(long offset, long value) {
        putData(offset, ByteBuffer.allocate(8).putLong(value).array(), 0, 8);
    }

    @Override
    public void putInt(long offset, int value) {
        putData(offset, ByteBuffer.allocate(4).putInt(value).array(), 0, 4);
    }

    @Override
    public void putByte(long offset, byte value) {
        putData(offset, new byte[] {value}, 0, 1);
    }

    @Override
    public long getLong(long offset) {
        byte[] b = new byte[8];
        getData(offset, b, 0, 8);
        return ByteBuffer.wrap(b).getLong();
    }

    @Override
    public int getInt(long offset) {
        byte[] b = new byte[4];
        getData(offset, b, 0, 4);
        return ByteBuffer.wrap(b).getInt();
    }

    @Override
    public byte getByte(long offset) {
        byte[] b = new byte[1];
        getData(offset, b, 0, 1);
        return b[0];
    }

    @Override
    public DataInput2 getDataInput(long offset, int size) {
        byte[] b = new byte[size];
        getData(offset, b, 0, size);
        return new DataInput2.ByteArray(b);
    }

    @Override
    public DataInput2 getDataInputOverlap(long offset, int size) {
        return getDataInput(offset, size);
    }

    @Override
    public void putDataOverlap(long offset, byte[] src, int srcPos, int srcSize) {
        putData(offset, src, srcPos, srcSize);
    }

    @Override
    public synchronized void clear(long startOffset, long endOffset) {
        byte[] zeros = new byte[PAGE];
        for (long pos = startOffset; pos < endOffset; ) {
            int n = (int) Math.min(PAGE - pos % PAGE, endOffset - pos);
            putData(pos, zeros, 0, n);
            pos += n;
        }
    }

    @Override
    public synchronized void ensureAvailable(long offset) {
        length = Math.max(length, offset);
    }

    /**
     * MapDB shrinks its file only in StoreDirect.compact(), which vmfuse never calls; what it may
     * cut is what no commit holds. Below that, FILE could not be cut before the next commit (a
     * crash would leave the last one cut short), and its bytes there would read again after a
     * regrowth: refused, loudly, rather than half done.
     */
    @Override
    public synchronized void truncate(long size) {
        if (size < freshFrom()) {
            throw new UnsupportedOperationException("cannot shrink " + file + " to " + size
                    + " bytes: a commit holds " + freshFrom());
        }
        awaitHandOff();
        length = size;
        long firstGone = (size + PAGE - 1) / PAGE;
        takeBack(); // the writer's pages back with the others: those past the new end go below
        for (long page : dirty.keySet().toArray()) {
            if (page >= firstGone) {
                dirty.remove(page);
            }
        }
        clean.clear();
        // FILE may hold bytes past the new end that no commit holds: the writer's (whether its
        // hand-off succeeded or not), a failed sync's fresh pages. None may read back if MapDB
        // grows again.
        try {
            if (main.size() > size) {
                main.truncate(size);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot truncate " + file + ": " + e.getMessage(), e);
        }
        readable = Math.min(readable, size);
        if (size % PAGE != 0) {
            int in = (int) (size % PAGE);
            pageForWrite(size / PAGE).put(in, ZEROS, 0, PAGE - in);
        }
    }

    /** Pages changed since the last sync (each 4 KiB of memory, off the heap), handed to the writer or not. */
    synchronized int dirtyPages() {
        return dirty.size() + writing.size();
    }

    /**
     * While {@code hold}, sync() commits nothing: what MapDB commits meanwhile reaches FILE with the
     * first sync after, in one commit (a new store's structures and its format record at once).
     */
    synchronized void holdSyncs(boolean hold) {
        syncsHeld = hold;
    }

    /** Commits: every change since the last sync reaches FILE, or (after a crash) none. */
    @Override
    public synchronized void sync() {
        if (syncsHeld || (dirty.isEmpty() && writing.isEmpty() && length == fileLength)) {
            return;
        }
        IntArrayList releasing;
        try {
            releasing = blocks == null ? null : blocks.beforeCommit(); // what the commit points at is on the disk first
        } catch (IOException e) {
            throw new UncheckedIOException("cannot commit " + file + ": " + e.getMessage(), e);
        }
        long durableBefore = durableCommits;
        try {
            commit();
        } finally {
            if (blocks != null) {
                blocks.afterCommit(releasing, durableCommits != durableBefore);
            }
        }
    }

    /**
     * The blocks file whose slots the store's records point at: forced before each commit, told
     * after it whether the commit is durable (see BlockFile).
     */
    synchronized void blocks(BlockFile f) {
        blocks = f;
    }

    private void commit() {
        clean.clear(); // FILE changes from here on (on failure too: fresh pages may be in it)
        try {
            writeFreshPages();
            writeCommitFile();
            applyToFile();
            if (length != lengthRecorded) { // most commits change pages, not the length: no write, no fsync
                writeLength(disk, file, length);
                lengthRecorded = length;
            }
            invalidate(disk, commitFile); // a crash before this only makes the next open write the same pages again
            commitPending = false;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot commit " + file + ": " + e.getMessage(), e);
        }
    }

    /**
     * Writes the changed pages wholly past FILE's end at the last sync straight into FILE (zero
     * pages past its end now need nothing: FILE reads zeros there), forces them, and drops them from
     * the pages the commit file will carry. Package-private for tests.
     */
    synchronized void writeFreshPages() throws IOException {
        awaitHandOff(); // what it wrote is forced below with the rest
        long[] sorted = sortedDirty();
        int from = Arrays.binarySearch(sorted, (freshFrom() + PAGE - 1) / PAGE);
        long[] fresh = Arrays.copyOfRange(sorted, from < 0 ? -from - 1 : from, sorted.length);
        if (fresh.length == 0 && writing.isEmpty()) {
            return;
        }
        // Through the page handle (O_DIRECT on a real disk): new pages are written once and few
        // are read back soon, so they skip the page cache. Copied into it, each was memory the
        // kernel had to find first, and on this CI's VM, whose host backs memory on first touch
        // (2.8 ms per MiB touched; a file written into pages used before: 0.36 ms per MiB), that
        // copy, not the disk, set a checkpoint's pace: in process, a close-mode device taking
        // 512 MiB of sequential writes at 128 MiB of journal memory went from about 190 to about
        // 360 MiB/s (medians of 8 rounds each, in runs of 4 that alternated).
        try {
            // FILE holds what the writer wrote: a page of zeros there now must be written, not skipped
            readable = Math.max(readable, main.size());
            if (pageHandle == null) {
                pageHandle = disk.openForPageWrites(file);
            }
            writePages(batch(pageHandle), fresh); // through the page cache where O_DIRECT is refused
            main.force(false);
        } catch (IOException | RuntimeException e) {
            takeBack(); // not known to be on disk: the next sync writes the writer's pages again too
            throw e;
        }
        readable = Math.max(readable, main.size());
        for (long page : fresh) {
            dirty.remove(page);
        }
        writing.clear(); // in FILE and forced, as the pages just written
        freshDirtied.clear();
    }

    /** Writes dirty {@code pages} (ascending) through {@code out}, but zeros past what FILE holds (it reads zeros there already). */
    private void writePages(Batch out, long[] pages) throws IOException {
        for (long page : pages) {
            long pos = page * PAGE;
            ByteBuffer contents = dirty.get(page);
            if (contents != ZERO_PAGE || pos < readable) {
                out.write(pos, contents.duplicate());
            }
        }
        out.flush();
    }

    /** The numbers of the dirty pages, in ascending order: a sync writes them in the file's order. */
    private long[] sortedDirty() {
        return dirty.keySet().toSortedArray();
    }

    /**
     * The commit file, complete and forced (the changed pages FILE's committed part holds):
     * written in place over an invalid one, or beside a complete one and renamed over it.
     * Package-private for tests.
     */
    synchronized void writeCommitFile() throws IOException {
        Path to = commitPending ? nextCommitFile(file) : commitFile;
        writeCommitFile(to);
        if (commitPending) {
            disk.rename(to, commitFile);
            disk.syncDirectory(file.toAbsolutePath().getParent());
        }
        commitPending = true;
        pendingLength = length;
        durableCommits++;
    }

    /**
     * Commits whose commit file was complete and forced: from then on each is what the next open
     * recovers, whatever failed after (applying it to FILE). A caller whose commit failed asks
     * this, to know whether to undo what it committed.
     */
    synchronized long durableCommits() {
        return durableCommits;
    }

    private void writeCommitFile(Path to) throws IOException {
        CRC32C crc = new CRC32C();
        try (DiskFile ch = disk.open(to, true)) {
            ByteBuffer h = ByteBuffer.allocate(HEADER).order(ByteOrder.LITTLE_ENDIAN);
            h.putInt(MAGIC).putInt(VERSION).putLong(length).putInt(dirty.size()).flip();
            crc.update(h.duplicate());
            Batch out = batch(ch);
            long pos = 0;
            out.write(pos, h);
            pos += HEADER;
            ByteBuffer key = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            for (long page : sortedDirty()) {
                ByteBuffer contents = dirty.get(page);
                boolean zeros = contents == ZERO_PAGE;
                key.clear().putLong(zeros ? page | ZERO_FLAG : page).flip();
                crc.update(key.duplicate());
                out.write(pos, key);
                pos += 8;
                if (!zeros) {
                    crc.update(contents.duplicate());
                    out.write(pos, contents.duplicate());
                    pos += PAGE;
                }
            }
            ByteBuffer t = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt((int) crc.getValue()).flip();
            out.write(pos, t);
            out.flush();
            pos += 4;
            if (ch.size() > pos) {
                ch.truncate(pos); // the checksum is the file's last 4 bytes
            }
            ch.force(true);
        }
    }

    private void applyToFile() throws IOException {
        apply(batch(main), sortedDirty(), dirty::get, length);
        fileLength = length;
        readable = length;
        dirty.clear();
        freshDirtied.clear();
        handOffsOff = false;
        arena.reset();
    }

    private Batch batch(DiskFile ch) {
        if (staging == null) {
            staging = Batch.buffer();
        }
        return new Batch(ch, staging, forceStep);
    }

    /**
     * From the next sync on, its writes reach the disk in steps of {@code bytes}, each forced
     * (0: in one go, forced once per file, the default). For an owner whose other writers wait on
     * fdatasyncs of the same disk: a disk's cache flush takes with it everything written before
     * it, so a flush that comes while a sync writes waits behind what that sync has written and
     * not yet forced, tens of MiB in one go, a step at most in steps (the journal store's
     * checkpoint beside guests' flushes: see JournalStore#PACED_STEP). Forcing earlier never
     * changes what a crash leaves: every file is forced at its end as before.
     */
    synchronized void forceEvery(int bytes) {
        if (bytes < 0 || bytes % PAGE != 0) { // whole pages: a batch's buffer is what goes to the O_DIRECT handle
            throw new IllegalArgumentException("step " + bytes + ", not a multiple of " + PAGE);
        }
        forceStep = bytes;
    }

    @Override
    public synchronized void close() {
        if (closed.compareAndSet(false, true)) {
            if (writer != null) {
                awaitHandOff(); // not closed under it; what it wrote is dropped as unsynced changes are
                writer.shutdown();
            }
            try {
                try {
                    if (pageHandle != null) {
                        pageHandle.close();
                    }
                } finally {
                    main.close(); // unsynced changes are dropped, as a crash would drop them
                }
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    @Override
    public int sliceSize() {
        return -1;
    }

    @Override
    public boolean isSliced() {
        return false;
    }

    @Override
    public synchronized long length() {
        return length;
    }

    @Override
    public boolean isReadOnly() {
        return false;
    }

    @Override
    public File getFile() {
        return file.toFile();
    }

    @Override
    public boolean getFileLocked() {
        return false;
    }
}
