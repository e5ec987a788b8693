package vmfuse.durable;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.LongConsumer;

/*
 * The model.
 *
 * FaultyDisk is the Disk contract read strictly, on top of a real directory (its delegate, normally
 * RealDisk.of), with two kinds of fault a test asks for. It copies the approach of SQLite's crash and
 * I/O-error test VFS and RocksDB's FaultInjectionTestFS: every call goes through to the real files at
 * once, and FaultyDisk remembers just enough to put the directory back, at a power cut, into a state a
 * disk with a volatile write cache might be left in.
 *
 * (A) I/O errors. The calls that change the disk are numbered from 1 across all files, in the order
 * they happen: DiskFile write, force, truncate and punch; open that creates; rename; delete of a file
 * that exists; syncDirectory. A test says which numbers fail and how (failAt: once; failFrom: that
 * one and every one after, a disk that stays broken or full; failNextForce: the next DiskFile force,
 * whatever its number, where a store's own thread may force first). A short write writes a prefix and
 * returns its length, as pwrite(2) does when the disk fills up; the caller's next write then gets
 * ENOSPC. A failed force behaves as Linux's fsync does after a writeback error (the PostgreSQL fsync
 * lesson): the kernel marks the pages clean though they never reached the disk, so a later fsync
 * that returns 0 does not make them durable; only writing them again does.
 *
 * Reads fail too, with EIO, and are numbered apart (DiskFile read and Disk readAll, from 1): failRead
 * fails one of them, once, as a transient error does; failReads makes a range of a file a bad
 * sector, whose every read fails until a write, a punch or a truncate covers it (a disk remaps a
 * sector written again; a hole reads without it).
 *
 * (B) Power cuts. Each file is an Inode, so what we know about it follows it through renames and
 * into the graveyard. An inode keeps its durable size (its size at its last successful force) and,
 * for every 4 KiB page written, punched or truncated away since then, the page's durable content,
 * read from the file just before the first change. A page wholly beyond the durable size has no
 * content to keep: it reverts to zeros (or to beyond the end). So a write costs at most a copy of
 * what it overwrites, and nothing when it appends into a region past the durable size.
 *
 * Each directory keeps its creates, renames and deletes since its last successful syncDirectory.
 * A delete, or a rename over an existing file, moves the old file into the graveyard directory this
 * disk owns, so a cut can bring it back; syncing the directory makes the change durable and removes
 * the file from the graveyard for good. (A rename between two directories counts as a change of the
 * target directory; the store renames within one directory.)
 *
 * powerCut() kills this disk (every later call, reads included, throws "power cut") and then, chosen
 * by the seed, rewrites the directory to what the disk might hold after the cut: one mode per cut
 * (NONE of what is unsynced survives, ALL of it, or a RANDOM choice); per directory a prefix of its
 * unsynced changes survives and the rest are undone, newest first; then, per file wherever it ended
 * up, its size becomes its durable or its current size and each unsynced page its new content, its
 * durable content, or a mix torn at 512-byte sectors. afterCut() is the next mount: a fresh
 * FaultyDisk over that directory with nothing unsynced.
 *
 * Everything, I/O included, runs under the FaultyDisk's monitor: the store under test has a
 * checkpoint thread and flushing threads, and a cut must see no call half done.
 */

/**
 * A {@link Disk} over a real directory that fails the calls a test names and loses, at a power cut,
 * whatever the contract lets it lose. Deterministic for a seed. See the model at the top of the file.
 */
public final class FaultyDisk implements Disk {
    /** The error an injected failure gives. */
    public enum Fault {
        /** "Input/output error". */
        EIO,
        /** "No space left on device". */
        ENOSPC,
        /** A write writes a prefix and returns its length; the next write gets ENOSPC. Other calls: ENOSPC. */
        SHORT_WRITE
    }

    static final int PAGE = 4096;
    static final int SECTOR = 512;

    private static final String CUT_MESSAGE = "power cut";
    /** The durable content of a page beyond the durable size: zeros, as far as the file reaches. */
    private static final byte[] BEYOND_END = new byte[0];

    /** What becomes of a mutating call. */
    private enum Verdict { GO, EIO, ENOSPC, SHORT, CUT }

    /** What survives of the unsynced state at one cut. */
    private enum CutMode { NONE, ALL, RANDOM }

    /** What a page holds after a cut in RANDOM mode. */
    private enum PageAfterCut { NEW, OLD, TORN }

    private final Disk delegate;
    private final Path graveyard;
    private final long seed;
    private final Random faultRandom;

    private long calls;
    private long failures;
    private final Map<Long, Fault> failAt = new HashMap<>();
    private long failFrom = Long.MAX_VALUE;
    private Fault failFromKind;
    private boolean enospcOwed;
    private Fault nextForceFault;
    /** What the writeFaultIn-th file write from now fails with (EIO or ENOSPC); null if none. */
    private Fault writeFault;
    private int writeFaultIn;
    private long powerCutAt;
    private long reads;
    private long failReadAt;
    private boolean cut;
    private long usableSpace = -1;
    private LongConsumer onCall;

    /** Numbers inodes, changes and graveyard names in the order they happen, so a cut walks them alike every run. */
    private long sequence;
    private final Map<Path, Inode> inodes = new HashMap<>();
    private final Map<Path, List<NameChange>> unsyncedNames = new LinkedHashMap<>();
    private final Set<File> openFiles = new LinkedHashSet<>();

    /**
     * A disk over {@code delegate}'s files. {@code graveyard} is a directory this disk owns (created
     * if absent) on the same filesystem as the files and outside the directories under test: deleted
     * and replaced files wait there until their directory is synced.
     */
    public FaultyDisk(Disk delegate, Path graveyard, long seed) throws IOException {
        this.delegate = delegate;
        this.graveyard = key(graveyard);
        this.seed = seed;
        this.faultRandom = new Random(mix(seed)); // mixed: java.util.Random's first draws barely differ for seeds close together
        Files.createDirectories(this.graveyard);
    }

    // ---- the test's controls ----

    /** Mutating calls so far. */
    public synchronized long calls() {
        return calls;
    }

    /** Injected failures so far (a short write and the ENOSPC it is followed by count once). */
    public synchronized long failures() {
        return failures;
    }

    /** The {@code n}-th mutating call fails with {@code kind}, once. */
    public synchronized void failAt(long n, Fault kind) {
        failAt.put(n, kind);
    }

    /** The {@code n}-th mutating call and every one after fail with {@code kind}: a disk that stays broken or full. */
    public synchronized void failFrom(long n, Fault kind) {
        failFrom = n;
        failFromKind = kind;
    }

    /**
     * The next fdatasync or fsync, of any file, fails with {@code kind} (ENOSPC for a short write),
     * once: for a store whose own thread may force before the test's call does, where a call
     * number would race.
     */
    public synchronized void failNextForce(Fault kind) {
        nextForceFault = kind;
    }

    /**
     * The {@code nth} write of a file from now (1: the next; forces, truncates and directory calls
     * are not counted) fails with {@code kind}, EIO or ENOSPC, once: for a store whose own thread
     * may force between a test's writes, where a call number would race.
     */
    public synchronized void failWrite(int nth, Fault kind) {
        if (nth < 1 || (kind != Fault.EIO && kind != Fault.ENOSPC)) {
            throw new IllegalArgumentException("failWrite(" + nth + ", " + kind + ")");
        }
        writeFaultIn = nth;
        writeFault = kind;
    }

    /** Drops the fault {@link #failWrite} set, if it has not happened; returns whether it had not. */
    public synchronized boolean cancelWriteFault() {
        boolean pending = writeFault != null;
        writeFault = null;
        return pending;
    }

    /** Reads so far: DiskFile read and Disk readAll. */
    public synchronized long reads() {
        return reads;
    }

    /** The {@code n}-th read (counted from this disk's first, as {@link #reads}) fails with EIO, once. */
    public synchronized void failRead(long n) {
        failReadAt = n;
    }

    /**
     * Makes {@code [offset, offset + length)} of {@code file} a bad sector: a read that overlaps
     * it fails with EIO, every time, until writes have covered all of it.
     */
    public synchronized void failReads(Path file, long offset, long length) throws IOException {
        if (offset < 0 || length <= 0) {
            throw new IllegalArgumentException("failReads(" + file + ", " + offset + ", " + length + ")");
        }
        inodeAt(key(file)).bad.add(offset, offset + length);
    }

    /** The reads of {@code file} made to fail by {@link #failReads} succeed again, as after a transient fault (a path that came back). */
    public synchronized void healReads(Path file) throws IOException {
        inodeAt(key(file)).bad.remove(0, Long.MAX_VALUE);
    }

    /** The {@code n}-th mutating call does not happen: the power goes instead, and the call throws "power cut". */
    public synchronized void powerCutAt(long n) {
        powerCutAt = n;
    }

    /** Called with each mutating call's number before it runs (under this disk's monitor). */
    public synchronized void onCall(LongConsumer listener) {
        onCall = listener;
    }

    /** What {@link #usableSpace} says from now on; negative: the delegate's again. */
    public synchronized void setUsableSpace(long bytes) {
        usableSpace = bytes;
    }

    public synchronized boolean isCut() {
        return cut;
    }

    // ---- Disk ----

    @Override
    public synchronized DiskFile open(Path file, boolean create) throws IOException {
        alive();
        Path path = key(file);
        boolean creates = create && !delegate.exists(path);
        if (creates) {
            admitOther();
        }
        DiskFile real = delegate.open(path, create);
        Inode inode;
        if (creates) {
            inode = new Inode(sequence++, path, 0);
            inodes.put(path, inode);
            record(path, new Created(sequence++, inode));
        } else {
            inode = inodeAt(path);
        }
        File f = new File(inode, real);
        openFiles.add(f);
        return f;
    }

    /** Throws {@link UncheckedIOException} ("power cut") after a cut: the interface lets it throw nothing else. */
    @Override
    public synchronized boolean exists(Path file) {
        if (cut) {
            throw new UncheckedIOException(new IOException(CUT_MESSAGE));
        }
        return delegate.exists(key(file));
    }

    @Override
    public synchronized byte[] readAll(Path file) throws IOException {
        alive();
        Path path = key(file);
        Inode inode = inodes.get(path);
        admitRead(inode, 0, inode == null ? 0 : Long.MAX_VALUE);
        return delegate.readAll(path);
    }

    /** Counts a read of [from, to) of {@code inode} (null: a file not seen yet) and fails it if the test said so. */
    private void admitRead(Inode inode, long from, long to) throws IOException {
        reads++;
        if (reads == failReadAt || inode != null && inode.bad.overlaps(from, to)) {
            failures++;
            throw new IOException("Input/output error");
        }
    }

    @Override
    public synchronized void rename(Path fromFile, Path toFile) throws IOException {
        alive();
        Path from = key(fromFile);
        Path to = key(toFile);
        admitOther();
        if (!delegate.exists(from)) {
            throw new NoSuchFileException(from.toString());
        }
        if (from.equals(to)) {
            return; // rename(2) of a name onto itself changes nothing
        }
        Inode moving = inodeAt(from);
        Inode replaced = delegate.exists(to) ? inodeAt(to) : null;
        Path grave = replaced == null ? null : bury(replaced);
        try {
            delegate.rename(from, to);
        } catch (IOException e) {
            if (replaced != null) {
                unbury(replaced, to);
            }
            throw e;
        }
        move(moving, to);
        record(to, new Renamed(sequence++, from, to, moving, replaced, grave));
    }

    @Override
    public synchronized void delete(Path file) throws IOException {
        alive();
        Path path = key(file);
        if (!delegate.exists(path)) {
            return;
        }
        admitOther();
        Inode inode = inodeAt(path);
        Path grave = bury(inode);
        record(path, new Deleted(sequence++, path, inode, grave));
    }

    @Override
    public synchronized void syncDirectory(Path dir) throws IOException {
        alive();
        Path d = key(dir);
        admitOther();
        delegate.syncDirectory(d);
        List<NameChange> changes = unsyncedNames.remove(d);
        if (changes != null) {
            for (NameChange c : changes) {
                c.settle();
            }
        }
    }

    @Override
    public synchronized long usableSpace(Path file) throws IOException {
        alive();
        return usableSpace >= 0 ? usableSpace : delegate.usableSpace(key(file));
    }

    // ---- power cuts ----

    /**
     * Cuts the power: every later call on this disk or its files throws "power cut", and the directory
     * becomes what the disk might hold after the cut (see the model). Does nothing if already cut.
     */
    public synchronized void powerCut() throws IOException {
        if (cut) {
            return;
        }
        cut = true;
        closeOpenFiles();
        Random r = new Random(mix(seed + 1)); // its own stream: what a cut does depends on the seed and the state only
        CutMode mode = pickMode(r);
        undoNames(mode, r);
        List<Inode> live = new ArrayList<>(inodes.values());
        live.sort(Comparator.comparingLong(i -> i.seq));
        for (Inode inode : live) {
            revert(inode, mode, r);
        }
        inodes.clear();
    }

    /** What the next mount sees: a fresh disk over the directory as the cut left it, its seed drawn from this one's. */
    public synchronized FaultyDisk afterCut() throws IOException {
        return afterCut(mix(seed));
    }

    /** As {@link #afterCut()}, with the seed given. */
    public synchronized FaultyDisk afterCut(long nextSeed) throws IOException {
        if (!cut) {
            throw new IllegalStateException("the power is still on");
        }
        return new FaultyDisk(delegate, graveyard, nextSeed);
    }

    /** A quarter of cuts lose everything unsynced, a quarter keep everything, half choose page by page. */
    private static CutMode pickMode(Random r) {
        switch (r.nextInt(4)) {
            case 0:
                return CutMode.NONE;
            case 1:
                return CutMode.ALL;
            default:
                return CutMode.RANDOM;
        }
    }

    /** Per directory a prefix of its unsynced changes survives; the rest are undone, newest first, across directories. */
    private void undoNames(CutMode mode, Random r) throws IOException {
        List<NameChange> undone = new ArrayList<>();
        List<NameChange> kept = new ArrayList<>();
        for (List<NameChange> changes : unsyncedNames.values()) {
            int keep = mode == CutMode.NONE ? 0 : mode == CutMode.ALL ? changes.size() : r.nextInt(changes.size() + 1);
            kept.addAll(changes.subList(0, keep));
            undone.addAll(changes.subList(keep, changes.size()));
        }
        undone.sort(Comparator.comparingLong(NameChange::seq).reversed());
        for (NameChange c : undone) {
            c.undo();
        }
        for (NameChange c : kept) {
            c.settle();
        }
        unsyncedNames.clear();
    }

    /** Puts one file's size and unsynced pages to what survived of them. */
    private void revert(Inode inode, CutMode mode, Random r) throws IOException {
        if (inode.path == null || mode == CutMode.ALL) {
            return; // gone, or everything written reached the platter
        }
        TreeMap<Long, byte[]> pages = inode.unsyncedPages();
        try (DiskFile f = delegate.open(inode.path, false)) {
            long current = f.size();
            if (pages.isEmpty() && current == inode.durableSize) {
                return;
            }
            long size = mode == CutMode.NONE || r.nextBoolean() ? inode.durableSize : current;
            resize(f, current, size);
            for (Map.Entry<Long, byte[]> e : pages.entrySet()) {
                long start = e.getKey() * PAGE;
                if (start >= size) {
                    break; // beyond the end: nothing of it is left to get right
                }
                PageAfterCut what = mode == CutMode.NONE ? PageAfterCut.OLD : PageAfterCut.values()[r.nextInt(3)];
                if (what == PageAfterCut.NEW) {
                    continue;
                }
                byte[] image = Arrays.copyOf(e.getValue(), PAGE);
                if (what == PageAfterCut.TORN) {
                    tear(f, start, image, r);
                }
                writeAll(f, ByteBuffer.wrap(image, 0, (int) Math.min(PAGE, size - start)), start);
            }
        }
    }

    /** Lays some of the page's new sectors, chosen by {@code r}, over its old content in {@code image}. */
    private static void tear(DiskFile f, long start, byte[] image, Random r) throws IOException {
        byte[] now = Arrays.copyOf(readPage(f, start / PAGE), PAGE); // zeros past the end
        for (int s = 0; s < PAGE; s += SECTOR) {
            if (r.nextBoolean()) {
                System.arraycopy(now, s, image, s, SECTOR);
            }
        }
    }

    private static void resize(DiskFile f, long current, long size) throws IOException {
        if (size < current) {
            f.truncate(size);
        } else if (size > current) {
            writeAll(f, ByteBuffer.allocate(1), size - 1); // the file was truncated since its force: it grows back
        }
    }

    private void closeOpenFiles() {
        for (File f : openFiles) {
            try {
                f.real.close();
            } catch (IOException e) {
                // the power is off: nothing to tell anyone
            }
        }
        openFiles.clear();
    }

    // ---- I/O errors ----

    private void alive() throws IOException {
        if (cut) {
            throw new IOException(CUT_MESSAGE);
        }
    }

    /**
     * Numbers a mutating call and says what becomes of it. {@code writeBytes} is the length of a
     * write, negative for any other call.
     */
    private Verdict admit(long writeBytes) {
        long n = ++calls;
        if (onCall != null) {
            onCall.accept(n);
        }
        if (n == powerCutAt) {
            return Verdict.CUT;
        }
        boolean write = writeBytes >= 0;
        if (enospcOwed && write) {
            enospcOwed = false; // the rest of the short write's fault
            return Verdict.ENOSPC;
        }
        Fault fault = failAt.remove(n);
        boolean once = fault != null;
        if (fault == null && n >= failFrom) {
            fault = failFromKind;
        }
        if (fault == null) {
            return Verdict.GO;
        }
        failures++;
        switch (fault) {
            case EIO:
                return Verdict.EIO;
            case SHORT_WRITE:
                if (writeBytes > 1) {
                    if (once) {
                        enospcOwed = true;
                    } else {
                        failFromKind = Fault.ENOSPC; // the disk is full from here on
                    }
                    return Verdict.SHORT;
                }
                return Verdict.ENOSPC;
            default:
                return Verdict.ENOSPC;
        }
    }

    /** Admits a call that is not a write; throws what it gets instead of going ahead. */
    private void admitOther() throws IOException {
        Verdict v = admit(-1);
        if (v != Verdict.GO) {
            throw refusal(v);
        }
    }

    /** The exception a refused call throws; for a cut, cuts the power first. */
    private IOException refusal(Verdict v) throws IOException {
        switch (v) {
            case EIO:
                return new IOException("Input/output error");
            case CUT:
                powerCut();
                return new IOException(CUT_MESSAGE);
            default:
                return new IOException("No space left on device");
        }
    }

    /** How much of a write of {@code len} (more than 1) bytes a short write writes: at least 1, less than all. */
    private int shortLength(int len) {
        if (len > PAGE && len % PAGE == 0 && faultRandom.nextBoolean()) {
            return PAGE * (1 + faultRandom.nextInt(len / PAGE - 1)); // whole pages, as a full disk often stops
        }
        return 1 + faultRandom.nextInt(len - 1); // anywhere, mostly inside a page
    }

    /** How much of a write cut by the power reaches the file first: whole pages, fewer than all. */
    private int tornLength(int len) {
        return len > PAGE ? PAGE * faultRandom.nextInt((len + PAGE - 1) / PAGE) : 0;
    }

    // ---- the namespace ----

    private static Path key(Path file) {
        return file.toAbsolutePath().normalize();
    }

    /** The inode at {@code path}, made for a file this disk has not seen yet: all of it is durable. */
    private Inode inodeAt(Path path) throws IOException {
        Inode inode = inodes.get(path);
        if (inode == null) {
            inode = new Inode(sequence++, path, Files.size(path));
            inodes.put(path, inode);
        }
        return inode;
    }

    private void move(Inode inode, Path to) {
        if (inode.path != null && inodes.get(inode.path) == inode) {
            inodes.remove(inode.path);
        }
        inode.path = to;
        if (to != null && !to.startsWith(graveyard)) {
            inodes.put(to, inode);
        }
    }

    /** Moves a file out of its directory into the graveyard, where a cut can bring it back from. */
    private Path bury(Inode inode) throws IOException {
        Path grave = graveyard.resolve(sequence++ + "-" + inode.path.getFileName());
        delegate.rename(inode.path, grave);
        move(inode, grave);
        return grave;
    }

    private void unbury(Inode inode, Path to) throws IOException {
        delegate.rename(inode.path, to);
        move(inode, to);
    }

    /** The file in {@code grave}, if it is still there, is gone for good. */
    private void forget(Inode inode, Path grave) throws IOException {
        if (inode != null && grave.equals(inode.path)) {
            delegate.delete(grave);
            move(inode, null);
        }
    }

    private void record(Path path, NameChange change) {
        unsyncedNames.computeIfAbsent(path.getParent(), d -> new ArrayList<>()).add(change);
    }

    /** A create, rename or delete not yet made durable by a sync of its directory. */
    private interface NameChange {
        long seq();

        /** Puts the names back as they were before this change (later changes are undone already). */
        void undo() throws IOException;

        /** The change is durable: a file it took away leaves the graveyard. */
        void settle() throws IOException;
    }

    private final class Created implements NameChange {
        private final long seq;
        private final Inode inode;

        Created(long seq, Inode inode) {
            this.seq = seq;
            this.inode = inode;
        }

        @Override
        public long seq() {
            return seq;
        }

        @Override
        public void undo() throws IOException {
            if (inode.path != null) {
                delegate.delete(inode.path);
                move(inode, null);
            }
        }

        @Override
        public void settle() {
            // nothing waits in the graveyard
        }
    }

    private final class Deleted implements NameChange {
        private final long seq;
        private final Path path;
        private final Inode inode;
        private final Path grave;

        Deleted(long seq, Path path, Inode inode, Path grave) {
            this.seq = seq;
            this.path = path;
            this.inode = inode;
            this.grave = grave;
        }

        @Override
        public long seq() {
            return seq;
        }

        @Override
        public void undo() throws IOException {
            if (grave.equals(inode.path)) {
                unbury(inode, path);
            }
        }

        @Override
        public void settle() throws IOException {
            forget(inode, grave);
        }
    }

    private final class Renamed implements NameChange {
        private final long seq;
        private final Path from;
        private final Path to;
        private final Inode inode;
        private final Inode replaced;
        private final Path grave;

        Renamed(long seq, Path from, Path to, Inode inode, Inode replaced, Path grave) {
            this.seq = seq;
            this.from = from;
            this.to = to;
            this.inode = inode;
            this.replaced = replaced;
            this.grave = grave;
        }

        @Override
        public long seq() {
            return seq;
        }

        @Override
        public void undo() throws IOException {
            if (to.equals(inode.path)) {
                delegate.rename(to, from);
                move(inode, from);
            }
            if (replaced != null && grave.equals(replaced.path)) {
                unbury(replaced, to);
            }
        }

        @Override
        public void settle() throws IOException {
            forget(replaced, grave);
        }
    }

    // ---- file contents ----

    private static long mix(long z) { // SplitMix64's finalizer: seeds far apart for seeds close together
        z += 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** Page {@code p} as the file holds it now, shorter if the file ends inside it. */
    private static byte[] readPage(DiskFile f, long p) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(PAGE);
        f.readFully(b, p * PAGE);
        return Arrays.copyOf(b.array(), b.position());
    }

    private static void writeAll(DiskFile f, ByteBuffer src, long pos) throws IOException {
        while (src.hasRemaining()) {
            pos += f.write(src, pos);
        }
    }

    /** One file, whatever names it has had: what of it is durable, and what a cut may lose. */
    private static final class Inode {
        final long seq;
        /** Where the file is now (maybe the graveyard); null once it is gone for good. */
        Path path;
        long durableSize;
        /** Pages changed since the last force, each with its durable content. */
        final TreeMap<Long, byte[]> unforced = new TreeMap<>();
        /** Pages a failed force dropped: no later force makes them durable until they are written again. */
        final TreeMap<Long, byte[]> lostToFailedForce = new TreeMap<>();
        /** Bad sectors ({@link #failReads}): reads overlapping them fail until they are written. */
        final Ranges bad = new Ranges();

        Inode(long seq, Path path, long durableSize) {
            this.seq = seq;
            this.path = path;
            this.durableSize = durableSize;
        }

        /**
         * Keeps the durable content of the pages of [from, to) before they change. A write
         * ({@code rewrite}) also takes pages out of a failed force's reach: they are dirty again.
         */
        void beforeChange(DiskFile f, long from, long to, boolean rewrite) throws IOException {
            if (to <= from) {
                return;
            }
            for (long p = from / PAGE, last = (to - 1) / PAGE; p <= last; p++) {
                Long page = p;
                byte[] dropped = rewrite ? lostToFailedForce.remove(page) : null;
                if (dropped != null) {
                    unforced.put(page, dropped);
                } else if (!unforced.containsKey(page) && !lostToFailedForce.containsKey(page)) {
                    unforced.put(page, p * PAGE < durableSize ? readPage(f, p) : BEYOND_END);
                }
            }
        }

        /** fsync and fdatasync alike: the pages and the size are durable. */
        void forced(long size) {
            unforced.clear();
            durableSize = size;
        }

        /** Linux marks the pages clean though they never reached the disk. */
        void forceFailed() {
            lostToFailedForce.putAll(unforced);
            unforced.clear();
        }

        TreeMap<Long, byte[]> unsyncedPages() {
            TreeMap<Long, byte[]> all = new TreeMap<>(unforced);
            all.putAll(lostToFailedForce);
            return all;
        }
    }

    /** A file opened through this disk: the delegate's file, with the calls numbered and the changes kept. */
    private final class File implements DiskFile {
        private final Inode inode;
        private final DiskFile real;

        File(Inode inode, DiskFile real) {
            this.inode = inode;
            this.real = real;
        }

        @Override
        public int read(ByteBuffer dst, long pos) throws IOException {
            synchronized (FaultyDisk.this) {
                alive();
                admitRead(inode, pos, pos + dst.remaining());
                return real.read(dst, pos);
            }
        }

        @Override
        public int write(ByteBuffer src, long pos) throws IOException {
            synchronized (FaultyDisk.this) {
                alive();
                int len = src.remaining();
                Verdict v = admit(len);
                if (v == Verdict.GO && writeFault != null && --writeFaultIn == 0) {
                    v = writeFault == Fault.EIO ? Verdict.EIO : Verdict.ENOSPC;
                    writeFault = null;
                    failures++;
                }
                switch (v) {
                    case GO:
                        return writeThrough(src, pos, len);
                    case SHORT:
                        return writeThrough(src, pos, shortLength(len));
                    case CUT:
                        writeThrough(src, pos, tornLength(len)); // a multi-page write may be torn by the cut
                        throw refusal(v);
                    default:
                        throw refusal(v);
                }
            }
        }

        /** Writes the first {@code n} bytes of {@code src}, keeping the durable content of what they overwrite. */
        private int writeThrough(ByteBuffer src, long pos, int n) throws IOException {
            if (n == 0) {
                return 0;
            }
            inode.beforeChange(real, pos, pos + n, true);
            ByteBuffer part = src.duplicate();
            part.limit(part.position() + n);
            int written = real.write(part, pos);
            inode.bad.remove(pos, pos + written);
            src.position(src.position() + written);
            return written;
        }

        @Override
        public void force(boolean metadata) throws IOException {
            synchronized (FaultyDisk.this) {
                alive();
                Verdict v = admit(-1);
                if (v == Verdict.GO && nextForceFault != null) {
                    v = nextForceFault == Fault.EIO ? Verdict.EIO : Verdict.ENOSPC;
                    nextForceFault = null;
                    failures++;
                }
                if (v == Verdict.GO) {
                    try {
                        real.force(metadata);
                    } catch (IOException e) {
                        inode.forceFailed();
                        throw e;
                    }
                    inode.forced(real.size());
                    return;
                }
                if (v != Verdict.CUT) {
                    inode.forceFailed();
                }
                throw refusal(v);
            }
        }

        @Override
        public void truncate(long size) throws IOException {
            synchronized (FaultyDisk.this) {
                alive();
                admitOther();
                long current = real.size();
                inode.beforeChange(real, size, Math.min(current, inode.durableSize), false);
                real.truncate(size);
                inode.bad.remove(size, Long.MAX_VALUE); // what is cut off reads as nothing, or zeros once grown again
            }
        }

        @Override
        public long size() throws IOException {
            synchronized (FaultyDisk.this) {
                alive();
                return real.size();
            }
        }

        @Override
        public boolean punch(long offset, long length) throws IOException {
            synchronized (FaultyDisk.this) {
                alive();
                admitOther();
                long end = Math.min(offset + length, Math.min(real.size(), inode.durableSize));
                inode.beforeChange(real, offset, end, false);
                boolean punched = real.punch(offset, length);
                if (punched) {
                    inode.bad.remove(offset, offset + length); // a hole reads as zeros without the sector
                }
                return punched;
            }
        }

        /** Releases the descriptor; after a cut too (the process lives on, and close writes nothing). */
        @Override
        public void close() throws IOException {
            synchronized (FaultyDisk.this) {
                openFiles.remove(this);
                real.close();
            }
        }
    }

    /** Disjoint half-open ranges of a file. */
    private static final class Ranges {
        private final TreeMap<Long, Long> ends = new TreeMap<>();

        void add(long from, long to) {
            remove(from, to);
            ends.put(from, to);
        }

        void remove(long from, long to) {
            Map.Entry<Long, Long> before = ends.lowerEntry(from);
            if (before != null && before.getValue() > from) {
                ends.put(before.getKey(), from);
                if (before.getValue() > to) {
                    ends.put(to, before.getValue());
                }
            }
            for (Map.Entry<Long, Long> e = ends.ceilingEntry(from); e != null && e.getKey() < to;
                    e = ends.ceilingEntry(from)) {
                ends.remove(e.getKey());
                if (e.getValue() > to) {
                    ends.put(to, e.getValue());
                }
            }
        }

        boolean overlaps(long from, long to) {
            Map.Entry<Long, Long> e = ends.lowerEntry(to);
            return from < to && e != null && e.getValue() > from;
        }
    }
}
