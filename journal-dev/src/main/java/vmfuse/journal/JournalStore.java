package vmfuse.journal;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.UnaryOperator;

import org.mapdb.Atomic;
import org.mapdb.DB;
import org.mapdb.DBMaker;
import org.mapdb.HTreeMap;
import org.mapdb.Serializer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import vmfuse.durable.Disk;
import vmfuse.durable.DiskFile;
import vmfuse.durable.Parking;
import vmfuse.durable.RealDisk;

/*
 * The journal devices of one vmfuse store: their index in one MapDB file (STORE/journals.db),
 * their blocks in the blocks file (STORE/journals.db.blocks, BlockFile).
 *
 * On-disk format, version 3 (FORMAT below):
 *   - MapDB 3.1's plain record store (StoreDirect) on an AtomicVolume: a commit is atomic, and
 *     after a crash the file opens at the last commit (AtomicVolume says why not MapDB's own
 *     transactions: they do not survive a crash during a commit). The blocks file is forced
 *     before each commit, and its slots are written copy on write (BlockFile).
 *   - "vmfuse.format"  (atomic string): "vmfuse-journal-store 3". A store of version 2 (its
 *     blocks MapDB records, which version 3 still reads) is opened and becomes version 3 at
 *     once; anything else is refused.
 *   - "devices"        (hash map, name -> long[8]): root record id of the device's
 *                      RadixBlockStore, size in bytes, durability (ordinal), created and last
 *                      flush (ms since the epoch), uid, gid, permission bits; written by each
 *                      checkpoint (DeviceCatalog). An entry of 5 (no owner yet) is root's, 0600.
 *   - "vmfuse.generation" (atomic long): the number of the last checkpoint.
 *   - the RadixBlockStore nodes of every device, whose leaves are slots of the blocks file (or,
 *     from version 2, records of blocks not written since).
 *
 * Writes go to memory, not to MapDB: each device keeps its changed blocks and zeroed ranges
 * (JournalDevice), and a change of a FLUSH device is also appended to the RedoLog
 * (STORE/journals.db.redo.{0,1}). A flush waits until the log is forced to disk: the first
 * flush to come while no fdatasync runs issues one itself; flushes that come meanwhile wait,
 * and the first of them then serves them all with one fdatasync (group commit by a leader, as
 * in database logs: no thread hand-off for a lone flush). So a write costs a memory copy and a
 * log append, and a flush one shared fdatasync of a preallocated file.
 *
 * A checkpoint moves memory into MapDB, in the background of writers: under opLock exclusive
 * (microseconds: no fdatasync, see RedoLog#rotate) it rotates the redo log and freezes every
 * device's changes; then, with writers running again, it moves the frozen changes into the
 * devices' RadixBlockStores and commits MapDB with the log's new generation. A crash at any
 * point replays the log segments the last commit does not hold (RedoLog explains the
 * generations). Checkpoints run on the caller's timer, at close(), on creating, deleting and
 * renaming a device, when a log segment passes SEGMENT_LIMIT, and when the blocks held in
 * memory reach the memory bound; at the bound writers wait for the checkpoint to free memory
 * (and get ENOSPC if the store's disk cannot take it: a checkpoint first checks that the disk
 * has room for what it writes).
 *
 * A change of MapDB that fails part way (a read of its pages fails, as on a bad sector) breaks
 * the store off: it takes no more commits (breakOff). A failed fdatasync of the redo log makes
 * it refuse every later flush (RedoLog). Either way the store is opened again in place (reopen:
 * by the operator, or by the next checkpoint, at most once a minute), as a remount would open
 * it, with its devices served meanwhile and after.
 *
 * Locks: a device change holds opLock shared, then the device's turn and its monitor (so its log
 * records are in the order of its changes); a checkpoint holds this store's monitor, takes opLock
 * exclusive for the rotation only, then each device's turn and monitor, a batch at a time, as it
 * drains it (JournalDevice#turns: changes and batches, first come first served).
 *
 * Every wait a caller may make here (for opLock, this store's monitor, memory, a sync of the
 * log) is a {@link Parking}: a pool of request threads (FUSE's) lends another thread meanwhile,
 * so that a store stalled on its disk does not take every thread, or refuses the wait (EIO).
 */
public final class JournalStore implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(JournalStore.class);
    static final String FORMAT = "vmfuse-journal-store 3";
    /** The format before the blocks file: its blocks are MapDB records, read as they are; opened, it becomes FORMAT. */
    static final String FORMAT_2 = "vmfuse-journal-store 2";
    private static final String FORMAT_PREFIX = "vmfuse-journal-store ";


    private final Disk disk;
    private final Path file;
    /*
     * The store's files as opened: set by attach(), under reopenLock exclusive (and this store's
     * monitor) when the store is opened again in place (see reopen()); every device operation
     * holds reopenLock shared.
     */
    private volatile AtomicVolume volume;
    private volatile DB db;
    /** Whether the files are open (false after a reopen that failed, until one succeeds). */
    private volatile boolean attached;
    /**
     * The devices by name, live and in MapDB. Changed under this store's monitor; read without
     * it, so that a lookup (every getattr and open in journals/) never waits out a checkpoint,
     * which holds the monitor for its whole drain.
     */
    private final DeviceCatalog devices = new DeviceCatalog();
    private final ReentrantReadWriteLock opLock = new ReentrantReadWriteLock();
    /** Shared by every operation of a device, exclusive while the store's files are opened again (reopen). */
    private final ReentrantReadWriteLock reopenLock = new ReentrantReadWriteLock();
    /** This store as its devices see it: what they ask of it, and nothing else (one way: see DeviceStore). */
    private final DeviceStore devicesView = new DeviceStore() {
        @Override
        public BlockMemory blockMemory() {
            return budget.blockMemory();
        }

        @Override
        public void admit() throws StoreException {
            JournalStore.this.admit();
        }

        @Override
        public ReentrantReadWriteLock opLock() {
            return opLock;
        }

        @Override
        public ReentrantReadWriteLock reopenLock() {
            return reopenLock;
        }

        @Override
        public void checkAttached() throws StoreException {
            if (!attached) {
                StoreException b = broken;
                throw new StoreException(StoreException.EIO, b != null ? b.getMessage()
                        : "journal store " + file + " is closed", b);
            }
        }

        @Override
        public void touched() {
            JournalStore.this.touched();
        }

        @Override
        public void added(long n) {
            budget.added(n);
        }

        @Override
        public void released(long n) {
            budget.released(n);
        }

        @Override
        public RedoLog redo() {
            return redo;
        }

        @Override
        public void resize(String device, long from, long to) throws StoreException {
            index.resize(device, from, to);
        }

        @Override
        public void logAppended() {
            commits.appended();
        }

        @Override
        public void awaitLogSync() throws StoreException {
            commits.await();
        }

        @Override
        public ByteBuffer drainBuffer() {
            return drainBuffer;
        }
    };
    /** See {@link DeviceStore#drainBuffer()}. */
    private final ByteBuffer drainBuffer = Disk.alignedBuffer(JournalDevice.DRAIN_BATCH * RadixBlockStore.BLOCK_SIZE);
    /** The blocks of every device (format 3). */
    private volatile BlockFile blockFile;
    private volatile RedoLog redo;
    /** The flushes of FLUSH devices: one fdatasync of the redo log for all that wait. */
    private volatile GroupCommit commits;
    /** fdatasyncs, and flushes with nothing to force, of the GroupCommits of earlier opens (reopen). */
    private final AtomicLong syncsBefore = new AtomicLong();
    private final AtomicLong skippedBefore = new AtomicLong();
    /** The generation in MapDB, committed or not (a checkpoint sets it, then commits). */
    private volatile Atomic.Long generation;
    /**
     * The generation the file on disk holds: set only once a commit returned. A failed commit
     * leaves MapDB's value ahead of it, and the segments from this one on are still needed.
     * Guarded by this.
     */
    private long committedGeneration;
    /** Each redo log segment is preallocated to this size. */
    static final long SEGMENT_PREALLOCATE = 32L << 20;
    /** A checkpoint is requested once the active log segment holds this much. */
    static final long SEGMENT_LIMIT = 24L << 20;
    /** Room on the store's disk a checkpoint leaves beyond what it writes. */
    static final long DISK_HEADROOM = 16L << 20;
    /** Default bound on the blocks held in memory (--journal-memory). */
    public static final long DEFAULT_MEMORY = 128L << 20;
    /** The bound on the blocks held in memory, and the requests for checkpoints that free them. */
    private final MemoryBudget budget;
    /** The heap the devices' radix trees may take, reserved by their sizes. */
    private final IndexReserve index;
    /** MiB of block memory a checkpoint that empties it keeps for the next writes, however idle the store. */
    static final int KEEP_CHUNKS = 8;
    private final Checkpointer checkpointer;
    private volatile boolean closed;
    /** Set when a failed change could not be undone: names and catalog may disagree, so no change is taken. */
    private volatile StoreException broken;
    /** Something changed since the last checkpoint froze the devices (an idle store commits nothing). */
    private volatile boolean touched = true;
    private final AtomicLong checkpoints = new AtomicLong();
    private final AtomicLong checkpointNanos = new AtomicLong();

    private JournalStore(Disk disk, Path file, MemoryBudget budget, IndexReserve index) {
        this.disk = disk;
        this.index = index;
        this.file = file;
        this.budget = budget;
        this.checkpointer = new Checkpointer(budget, this::checkpoint, file);
    }

    /**
     * Opens the store at {@code file}, creating it if absent. A file that is not a journal store,
     * is corrupt, or has another format version is refused with the reason, and left untouched.
     */
    public static JournalStore open(Path file) throws StoreException {
        return open(file, DEFAULT_MEMORY);
    }

    /** As {@link #open(Path)}, with at most {@code memoryLimit} bytes of blocks held in memory. */
    public static JournalStore open(Path file, long memoryLimit) throws StoreException {
        return open(file, memoryLimit, null);
    }

    /**
     * As {@link #open(Path, long)}; {@code holes} punches the store file where freed blocks leave
     * pages of zeros, so deleting or punching a device shrinks the store on disk (null: zeros are
     * written instead).
     */
    public static JournalStore open(Path file, long memoryLimit, Disk.Punch holes) throws StoreException {
        return open(RealDisk.of(holes), file, memoryLimit);
    }

    /** As {@link #open(Path, long)}, every file written through {@code disk}. */
    public static JournalStore open(Disk disk, Path file, long memoryLimit) throws StoreException {
        return open(disk, file, memoryLimit, IndexReserve.defaultLimit());
    }

    /**
     * As {@link #open(Disk, Path, long)}, but a store that cannot be opened (refused as corrupt,
     * of another format, its redo log refused, its disk failing) is returned all the same,
     * broken and serving no device, with the reason ({@link #brokenReason}): every device
     * operation and change fails with EIO until a {@link #reopen} succeeds (the checkpoint timer
     * tries once a minute). The daemon mounts so, and the images of the mount are served whatever
     * the journal store's state. Throws only for a memory limit it refuses.
     */
    public static JournalStore openOrBroken(Disk disk, Path file, long memoryLimit) throws StoreException {
        JournalStore store = new JournalStore(disk, file, new MemoryBudget(memoryLimit),
                new IndexReserve(IndexReserve.defaultLimit()));
        try {
            long replayed = store.attach();
            log.info("journal store opened file={} devices={} replayed={}", file, store.devices.size(), replayed);
        } catch (StoreException e) {
            store.broken = new StoreException(StoreException.EIO, "journal store " + file + " cannot be opened ("
                    + e.getMessage() + "): no journal device is served until it is (vmfuse journal reopen once it is "
                    + "mended; the daemon tries every " + AUTO_REOPEN_NANOS / 1_000_000_000L + " s)", e);
            store.lastReopen = System.nanoTime();
            log.error("{}", store.broken.getMessage());
        }
        store.checkpointer.start();
        return store;
    }

    /**
     * As {@link #open(Disk, Path, long)}, the devices' index reserving at most {@code indexLimit}
     * bytes of heap ({@link IndexReserve}; the others open with a quarter of the JVM's heap).
     * Long.MAX_VALUE admits every size, for tests of the largest devices.
     */
    public static JournalStore open(Disk disk, Path file, long memoryLimit, long indexLimit) throws StoreException {
        JournalStore store = new JournalStore(disk, file, new MemoryBudget(memoryLimit), new IndexReserve(indexLimit));
        long replayed = store.attach();
        store.checkpointer.start();
        log.info("journal store opened file={} devices={} replayed={}", file, store.devices.size(), replayed);
        return store;
    }

    /**
     * Opens the store's files: finishes a commit a crash interrupted, opens MapDB and the blocks
     * file, serves the devices of the catalog (those this store already serves, by name, keep
     * their objects: see {@link DeviceCatalog#load}), replays the redo log and commits what it
     * replayed. Returns the records replayed. Under reopenLock exclusive, if the store serves
     * anything yet; on a failure every file it opened is closed again.
     */
    private long attach() throws StoreException {
        boolean exists;
        AtomicVolume v;
        DB d;
        try {
            if (disk.exists(file)) {
                int pages = AtomicVolume.recover(disk, file); // a commit a crash interrupted, if any
                if (pages > 0) {
                    log.info("journal store {}: finished an interrupted commit ({} pages)", file, pages);
                }
            }
            // Empty (once recovered), it is a store whose creation never committed: the creation is
            // one commit (below), and a crash before it ends leaves the file cut back to nothing.
            exists = disk.exists(file) && Files.size(file) > 0;
            if (exists) {
                check(file);
            } else {
                checkNoLog(disk, file);
            }
            v = AtomicVolume.open(disk, file);
        } catch (IOException e) {
            throw new StoreException(StoreException.EIO, "cannot open journal store " + file + ": " + e.getMessage(), e);
        }
        try {
            v.holdSyncs(!exists); // MapDB commits while it creates its structures: one commit, below
            d = DBMaker.volumeDB(v, exists).make();
        } catch (RuntimeException e) {
            v.close();
            throw new StoreException(StoreException.EIO, "cannot open journal store " + file + ": " + e.getMessage(), e);
        }
        try {
            Atomic.String format = d.atomicString("vmfuse.format").createOrOpen();
            if (!exists || !FORMAT.equals(format.get())) {
                // format 2 becomes 3 in the commit below, before any block is in a slot: a vmfuse
                // that reads only format 2 then refuses the store instead of taking slots for records
                format.set(FORMAT);
            }
            HTreeMap<String, long[]> catalog = d.hashMap("devices", Serializer.STRING, Serializer.LONG_ARRAY)
                    .createOrOpen();
            Atomic.Long gen = d.atomicLong("vmfuse.generation").createOrOpen();
            v.holdSyncs(false);
            d.commit();
            volume = v;
            db = d;
            generation = gen;
            committedGeneration = gen.get();
            Map<Long, JournalDevice> byRoot;
            try {
                blockFile = BlockFile.open(disk, file);
                v.blocks(blockFile);
                byRoot = devices.load(catalog, d.getStore(), blockFile, devicesView);
                blockFile.opened(); // the slots no tree points to: cut off, punched
            } catch (IOException e) {
                throw new StoreException(StoreException.errno(e), "cannot open the blocks file of journal store " + file
                        + ": " + e.getMessage(), e);
            }
            long[] replayed = new long[1];
            redo = RedoLog.open(disk, redoFile(file), gen.get(), preallocation(disk, file), (type, root, a, b, data) -> {
                JournalDevice dev = byRoot.get(root);
                if (dev != null) { // a device deleted since is never in a log: deletes checkpoint
                    dev.replay(type, a, b, data);
                }
            }, replayed);
            long reserved = 0;
            for (JournalDevice dev : byRoot.values()) { // their sizes as the log left them
                reserved += IndexReserve.worstCase(dev.size()) - IndexReserve.worstCase(0);
            }
            index.opened(reserved);
            commits = new GroupCommit(redo, file);
            attached = true;
            try {
                long replayedInto = redo.generation();
                touched = true;
                checkpoint(false);
                if (redo.generation() == replayedInto) {
                    // A crash in a checkpoint, after its rotation and before its commit: this one
                    // committed without rotating, and replay stopped at the first torn record of
                    // the newest segment, past which records of that generation may lie (written
                    // back before the cut, never flushed). Appended after the end, a record could
                    // end where one of them begins, and a later replay went on into it: a new
                    // generation first (a checkpoint with nothing to drain; found by a review).
                    touched = true;
                    checkpoint(false);
                }
                redo.shrink();
            } catch (StoreException | RuntimeException | Error e) {
                attached = false;
                commits.close(); // its forcer thread ends
                redo.close();
                throw e;
            }
            return replayed[0];
        } catch (StoreException | RuntimeException | Error e) {
            attached = false;
            try {
                d.close();
            } catch (RuntimeException c) { // MapDB reads its header to close: on a failed disk, that fails too
                e.addSuppressed(c);
                v.close();
            }
            closeBlockFile();
            if (e instanceof StoreException se) {
                throw se;
            }
            if (e instanceof Error err) {
                throw err;
            }
            throw new StoreException(StoreException.EIO, "cannot read journal store " + file + ": " + e.getMessage(), e);
        }
    }

    /**
     * What each redo log segment is preallocated to: SEGMENT_PREALLOCATE, or a sixteenth of the
     * free space if that is less (a small store's disk is not filled by the log).
     */
    private static long preallocation(Disk disk, Path file) {
        try {
            long free = disk.usableSpace(file);
            return Math.min(SEGMENT_PREALLOCATE, (free / 16) & ~((1L << 20) - 1));
        } catch (IOException e) {
            return 0;
        }
    }

    /** Reads an existing file read-only and refuses it unless it is a store of our format. */
    private static void check(Path file) throws StoreException {
        DB db;
        try {
            db = DBMaker.fileDB(file.toFile()).fileMmapEnableIfSupported().readOnly().make();
        } catch (RuntimeException e) {
            throw new StoreException(StoreException.EIO, "refusing " + file + ": not a vmfuse journal store, or corrupt ("
                    + e.getMessage() + "); it is left as it is", e);
        }
        try {
            String format = db.exists("vmfuse.format") ? db.atomicString("vmfuse.format").open().get() : null;
            if (format == null || !format.startsWith(FORMAT_PREFIX)) {
                throw new StoreException(StoreException.EIO, "refusing " + file
                        + ": not a vmfuse journal store (no format record); it is left as it is");
            }
            if (!format.equals(FORMAT) && !format.equals(FORMAT_2)) {
                throw new StoreException(StoreException.EIO, "refusing " + file + ": format '" + format
                        + "', this vmfuse reads '" + FORMAT + "'; it is left as it is");
            }
        } catch (RuntimeException e) {
            throw new StoreException(StoreException.EIO, "refusing " + file + ": corrupt (" + e.getMessage()
                    + "); it is left as it is", e);
        } finally {
            db.close();
        }
    }

    public Path file() {
        return file;
    }

    /**
     * A store made anew must find no redo log: its log is made after its creation commits, so a
     * log beside an empty or missing store file means that file was lost, and the log may hold
     * flushed writes; a new store would replay them into nothing and then rotate over them.
     */
    private static void checkNoLog(Disk disk, Path file) throws IOException {
        for (int i = 0; i < 2; i++) {
            Path segment = RedoLog.segmentFile(redoFile(file), i);
            if (disk.exists(segment) && Files.size(segment) > 0) {
                throw new IOException(file + " is empty or missing but its redo log " + segment.getFileName()
                        + " is there: the store file was lost; nothing is made over it (move the "
                        + file.getFileName() + "* files aside to start an empty store)");
            }
        }
    }

    /** The redo log's base name: its segments are this + ".0" and ".1". */
    static Path redoFile(Path file) {
        return file.resolveSibling(file.getFileName() + ".redo");
    }

    ReentrantReadWriteLock opLock() {
        return opLock;
    }

    RedoLog redo() {
        return redo;
    }

    /** A new device of {@code size} bytes; EEXIST if the name is taken. Committed before it returns. */
    public JournalDevice create(String name, long size, Durability durability) throws StoreException {
        return Parking.parked(() -> createLocked(name, size, durability), () -> busy("create"));
    }

    private synchronized JournalDevice createLocked(String name, long size, Durability durability) throws StoreException {
        checkOpen();
        RadixBlockStore.checkRange(0, size);
        if (devices.get(name) != null) {
            throw new StoreException(StoreException.EEXIST, "journal device " + name + " exists");
        }
        index.resize(name, 0, size); // given back by destroy(), if this create fails or when the device is deleted
        JournalDevice d;
        try {
            RadixBlockStore blocks = RadixBlockStore.create(db.getStore(), blockFile);
            long now = System.currentTimeMillis();
            d = new JournalDevice(devicesView, name, blocks, size, durability, now, 0, JournalDevice.Owner.ROOT);
        } catch (RuntimeException e) { // MapDB may be half through its new records
            index.resize(name, size, 0);
            breakOff("create of journal device " + name, e);
            throw new StoreException(StoreException.EIO, broken.getMessage(), e);
        }
        devices.put(d);
        touched = true;
        try {
            checkpoint(false);
        } catch (StoreException e) {
            // not in the store: it must not serve writes and flushes a crash would erase
            opLock.writeLock().lock();
            try {
                devices.drop(name);
                devices.unrecord(name);
                d.destroy();
            } catch (RuntimeException u) {
                breakOff("undo of the create of journal device " + name, u);
            } finally {
                opLock.writeLock().unlock();
            }
            throw e;
        }
        log.info("journal create device={} size={} durability={}", name, size, durability.label());
        return d;
    }

    /**
     * The device served under {@code name}, or null. While the store is opened again in place, the
     * lookup waits for it (a {@link Parking}; refused, it answers without waiting): a device lost
     * by the reopen is not handed out under a name its successor is about to take.
     */
    public JournalDevice device(String name) {
        boolean locked = Parking.lock(reopenLock.readLock());
        try {
            return devices.get(name);
        } finally {
            if (locked) {
                reopenLock.readLock().unlock();
            }
        }
    }

    /** The devices served (as {@link #device}, waiting out a reopen). */
    public List<JournalDevice> list() {
        boolean locked = Parking.lock(reopenLock.readLock());
        try {
            return new ArrayList<>(devices.all());
        } finally {
            if (locked) {
                reopenLock.readLock().unlock();
            }
        }
    }

    /**
     * Removes a device and every block of it. Committed before it returns; if that commit fails
     * the device is back as it was, and the error is thrown.
     *
     * <p>Two commits: the first drops the device from the catalog (its blocks stay allocated, so
     * no other device can get their record ids while a log segment that the committed state
     * replays may hold its records), the second frees its blocks. A crash between them leaves
     * its blocks unreferenced in the file (space, not data).
     */
    public void delete(String name) throws StoreException {
        Parking.parked(() -> {
            deleteLocked(name);
            return null;
        }, () -> busy("delete"));
    }

    private synchronized void deleteLocked(String name) throws StoreException {
        checkOpen();
        JournalDevice d = devices.get(name);
        if (d == null) {
            throw new StoreException(StoreException.ENOENT, "no journal device " + name);
        }
        long blocks = d.blocksStored();
        commitOrUndo(() -> {
            d.hide();
            devices.drop(name);
            devices.unrecord(name);
        }, () -> {
            devices.put(d); // the next checkpoint records it in the catalog again
            d.unhide();
        });
        free(d);
        log.info("journal delete device={} blocks={}", name, blocks);
    }

    /** Frees the blocks of a device whose removal is committed; if that commit fails, the next one frees them. */
    private void free(JournalDevice d) throws StoreException {
        opLock.writeLock().lock();
        try {
            d.destroy();
            touched = true;
        } catch (RuntimeException e) { // its removal is committed, and stands; MapDB may be half through
            breakOff("freeing the blocks of deleted journal device " + d.name(), e);
            return;
        } finally {
            opLock.writeLock().unlock();
        }
        try {
            checkpoint(false);
        } catch (StoreException e) {
            log.warn("journal device {} is deleted; its blocks are freed at the next checkpoint: {}", d.name(),
                    e.getMessage());
        }
    }

    /**
     * Gives a device the owner {@code change} makes of its own (chown, chmod through the mount:
     * one at a time, so neither undoes the other), in a commit: once this returns, a crash keeps
     * it. If that commit fails, the device keeps its owner and the error is thrown.
     */
    public void setOwner(String name, UnaryOperator<JournalDevice.Owner> change) throws StoreException {
        Parking.parked(() -> {
            setOwnerLocked(name, change);
            return null;
        }, () -> busy("chown"));
    }

    private synchronized void setOwnerLocked(String name, UnaryOperator<JournalDevice.Owner> change)
            throws StoreException {
        checkOpen();
        JournalDevice d = devices.get(name);
        if (d == null) {
            throw new StoreException(StoreException.ENOENT, "no journal device " + name);
        }
        JournalDevice.Owner was = d.owner();
        JournalDevice.Owner owner = change.apply(was);
        if (was.equals(owner)) {
            return;
        }
        commitOrUndo(() -> d.owner(owner), () -> d.owner(was));
        log.info("journal owner device={} uid={} gid={} mode={}", name, owner.uid(), owner.gid(),
                Integer.toOctalString(owner.mode()));
    }

    /**
     * Renames a device, replacing {@code to} if it exists, as rename(2) does: in one commit. If
     * that commit fails, both are back as they were, and the error is thrown.
     */
    public void rename(String from, String to) throws StoreException {
        rename(from, to, true);
    }

    /** As {@link #rename(String, String)}; unless {@code replace}, EEXIST if {@code to} exists (nothing changes). */
    public void rename(String from, String to, boolean replace) throws StoreException {
        Parking.parked(() -> {
            renameLocked(from, to, replace);
            return null;
        }, () -> busy("rename"));
    }

    private synchronized void renameLocked(String from, String to, boolean replace) throws StoreException {
        checkOpen();
        JournalDevice d = devices.get(from);
        if (d == null) {
            throw new StoreException(StoreException.ENOENT, "no journal device " + from);
        }
        if (from.equals(to)) {
            return;
        }
        JournalDevice replaced = devices.get(to);
        if (replaced != null && !replace) {
            throw new StoreException(StoreException.EEXIST, "journal device " + to + " exists");
        }
        // one hold of opLock for the whole move: a writer of d never finds it missing
        commitOrUndo(() -> {
            if (replaced != null) {
                replaced.hide();
            }
            devices.drop(from);
            devices.unrecord(from);
            devices.unrecord(to);
            d.renamed(to);
            devices.put(d);
        }, () -> { // the next checkpoint records both in the catalog again
            d.renamed(from);
            devices.put(d);
            if (replaced != null) {
                devices.put(replaced);
                replaced.unhide();
            } else {
                devices.drop(to);
            }
            devices.unrecord(to); // last: MapDB's, which can fail on a page read; the names are back before it
        });
        if (replaced != null) {
            free(replaced);
        }
    }

    /**
     * Makes {@code change} (under opLock exclusive: no writer sees half of it) and commits it; if
     * that commit fails before any commit of the checkpoint reached the disk, {@code undo} puts
     * everything back (under opLock again) and the error is thrown. One that failed after (in
     * applying a forced commit file, which the next open recovers) stands: it is what a crash
     * opens, so it is what the store serves (a review found such a delete undone, the device
     * taking flushes, and gone after the crash). Under this store's monitor.
     */
    private void commitOrUndo(Runnable change, Runnable undo) throws StoreException {
        opLock.writeLock().lock();
        try {
            change.run();
            touched = true;
        } catch (RuntimeException e) { // the catalog's pages could not be read: MapDB may be half through
            try {
                undo.run();
            } catch (RuntimeException u) {
                e.addSuppressed(u);
            }
            breakOff("a change of the catalog", e);
            throw new StoreException(StoreException.EIO, broken.getMessage(), e);
        } finally {
            opLock.writeLock().unlock();
        }
        long durable = volume.durableCommits();
        try {
            checkpoint(false);
        } catch (StoreException e) {
            if (volume.durableCommits() != durable) {
                log.warn("journal store {}: a change stands though its checkpoint failed after committing it: {}", file,
                        e.getMessage());
                return;
            }
            opLock.writeLock().lock();
            try {
                undo.run();
                touched = true;
            } catch (RuntimeException u) { // the catalog's pages could not be read back: the disk is failing
                e.addSuppressed(u);
                broken = new StoreException(StoreException.EIO, "journal store " + file + " could not undo a failed "
                        + "change (" + u.getMessage() + "): it takes no more changes until it is opened again", u);
                log.error("{}", broken.getMessage());
            } finally {
                opLock.writeLock().unlock();
            }
            throw e;
        }
    }

    /** A device changed (under opLock shared): the next checkpoint has something to commit. */
    void touched() {
        touched = true;
    }

    /** Bytes of blocks held in memory by every device. */
    public long memoryHeld() {
        return budget.held();
    }

    public long memoryLimit() {
        return budget.limit();
    }

    /** Bytes of off-heap memory allocated for blocks (held or free for the next writes). */
    public long memoryAllocated() {
        return budget.blockMemory().capacity();
    }

    BlockMemory blockMemory() {
        return budget.blockMemory();
    }

    /**
     * Bytes the store takes on disk: the MapDB file, its commit file, the redo log segments, and
     * the blocks file's slots in use (its free slots are punched).
     */
    public long bytesOnDisk() {
        RedoLog r = redo;
        BlockFile b = blockFile;
        long n = (r == null ? 0 : r.bytesOnDisk()) + (b == null ? 0 : b.slotsUsed() * BlockFile.BLOCK); // null: never opened
        String redoName = redoFile(file).getFileName().toString();
        try {
            for (Path p : storeFiles()) {
                if (!p.getFileName().toString().startsWith(redoName)) { // the segments' in-use bytes are counted above
                    n += Files.size(p);
                }
            }
        } catch (IOException e) {
            log.warn("cannot list {}: {}", file.getParent(), e.getMessage());
        }
        return n;
    }

    /**
     * The files an open reads whole: the store file, its commit file and the redo log's segments
     * (every file named after the store file), the blocks file left out (it is read block by block).
     */
    private List<Path> storeFiles() throws IOException {
        String name = file.getFileName().toString();
        String blocks = BlockFile.blocksFile(file).getFileName().toString();
        List<Path> files = new ArrayList<>();
        try (var all = Files.list(file.getParent())) {
            for (Path p : (Iterable<Path>) all::iterator) {
                String f = p.getFileName().toString();
                if (f.startsWith(name) && !f.equals(blocks)) {
                    files.add(p);
                }
            }
        }
        return files;
    }

    /**
     * Called before a write: asks for a checkpoint when the log segment is full, and waits while
     * the blocks in memory are at the bound (see {@link MemoryBudget#admit}).
     */
    void admit() throws StoreException {
        RedoLog r = redo; // null only in a store that never opened, which serves no device
        if (r != null && r.position() > SEGMENT_LIMIT) {
            budget.requestCheckpoint();
        }
        budget.admit();
    }

    /** The error of a wait on this store that the caller's pool refused (see {@link Parking}). */
    private StoreException busy(String what) {
        return new StoreException(StoreException.EIO, "journal " + what + " refused: too many requests already "
                + "wait on the journal store (" + file + ") or on other subsystems");
    }

    /**
     * Moves every device's changes in memory into MapDB and commits it (CLOSE devices' changes
     * included). Writers go on during it but for the rotation of the redo log. On a broken store
     * (see {@link #breakOff}) it opens the store again in place instead ({@link #reopen}), at
     * most once a minute, so that the timer's checkpoints mend a store a passing read error broke.
     */
    public void checkpoint() throws StoreException {
        checkpoint(true);
    }

    private void checkpoint(boolean mayReopen) throws StoreException {
        // An interrupt of the calling thread (a timer or a control request shut down at unmount)
        // must not reach the store's files: a FileChannel an interrupted thread uses is closed for
        // good (ClosedByInterruptException), and every later checkpoint, the one at close included,
        // failed with it (close-mode devices lost what was written since the last commit; found by
        // a review). The interrupt is kept for the caller, after.
        boolean interrupted = Thread.interrupted();
        try {
            Parking.parked(() -> {
                checkpointLocked(mayReopen, false);
                return null;
            }, () -> busy("checkpoint"));
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /**
     * {@code bounded}: the device changes in flight are waited for at most {@link #reopenWait}
     * (a reopen's checkpoint: a change hung on the disk, as a flush-mode write in the redo log,
     * then refuses it); else for as long as they take.
     */
    private synchronized void checkpointLocked(boolean mayReopen, boolean bounded) throws StoreException {
        if (mayReopen && !closed && (broken != null || attached && redo.refusing())
                && System.nanoTime() - lastReopen >= autoReopenNanos) {
            int lost = reopenLocked(broken != null ? "a checkpoint found it broken"
                    : "a checkpoint found its redo log refusing");
            if (lost > 0) { // not every change in memory is committed: those devices' are gone
                throw new StoreException(StoreException.EIO, "journal store " + file + " was opened again in place: "
                        + lost + " close-mode device(s) lost what was written since their last checkpoint (the log "
                        + "names them)");
            }
            return; // the reopen committed
        }
        try {
            checkOpen();
        } catch (StoreException e) { // writers waiting for memory fail now, not after their 120 s
            budget.checkpointFailed(e);
            throw e;
        }
        long start = System.nanoTime();
        try {
            checkRoom();
            lockChanges(bounded);
            try {
                if (!touched && committedGeneration == redo.generation()) {
                    budget.blockMemory().trim(KEEP_CHUNKS); // an idle store gives back what no interval used for a minute
                    return; // nothing changed since the last commit: no rotation, no commit, no disk write
                }
                // Rotate only if the inactive segment is obsolete: the file on disk holds the active
                // one's generation. After a failed checkpoint it does not (whatever MapDB's own,
                // uncommitted, value says), and both segments are still needed.
                if (committedGeneration == redo.generation()) {
                    redo.rotate(redo.generation() + 1);
                }
                for (JournalDevice d : devices.all()) {
                    d.freeze();
                }
                touched = false;
            } finally {
                opLock.writeLock().unlock();
            }
            long syncs = commits.syncs();
            volume.forceEvery(syncs != syncsAtLastCheckpoint ? PACED_STEP : 0);
            blockFile.forceEvery(syncs != syncsAtLastCheckpoint ? PACED_STEP : 0);
            syncsAtLastCheckpoint = syncs;
            // Close-mode devices first, each drained whole before anything commits: no log replays
            // over a commit of part of their changes, so after a crash one would open part old,
            // part new, neither its last commit nor this one (a review found it so). First, also
            // after a checkpoint that failed in one's drain: the next one ends that drain before
            // it commits anything. Then flush-mode devices, committed in steps (commitIfLarge).
            for (JournalDevice d : devices.all()) {
                if (d.durability() == Durability.CLOSE) {
                    d.drain(() -> { });
                }
            }
            // The catalog as frozen (names, sizes), before the first commit a flush-mode drain may
            // make: such a commit wrote the close-mode devices' new blocks under their old sizes,
            // and a catalog that held neither name of a device being renamed (found by a review:
            // after a crash the one opened half new, the other was gone). The log replays the
            // flush-mode devices' sizes, as their blocks, over it.
            for (JournalDevice d : devices.all()) {
                devices.record(d);
            }
            for (JournalDevice d : devices.all()) {
                if (d.durability() != Durability.CLOSE) {
                    d.drain(this::commitIfLarge);
                }
            }
            for (JournalDevice d : devices.all()) {
                d.flushNodes();
                devices.record(d);
            }
            long committing = redo.generation();
            generation.set(committing);
            db.commit();
            committedGeneration = committing;
            devices.committed();
            redo.inactiveCommitted(); // the commit holds what the other segment logged
            budget.blockMemory().trim(KEEP_CHUNKS); // if no writer came meanwhile, memory is empty: give back what no interval used for a minute
            checkpointNanos.addAndGet(System.nanoTime() - start);
            checkpoints.incrementAndGet();
            budget.checkpointSucceeded();
        } catch (StoreException e) {
            failed(e);
            throw e;
        } catch (RuntimeException e) {
            StoreException se = new StoreException(StoreException.errno(e), "checkpoint of " + file + " failed: " + e, e);
            failed(se);
            if (AtomicVolume.PageReadFailed.in(e)) {
                breakOff("checkpoint", e);
            }
            throw se;
        }
    }

    /** opLock exclusive: every device change in flight done; {@code bounded}, within {@link #reopenWait}. */
    private void lockChanges(boolean bounded) throws StoreException {
        if (bounded) {
            lockWithin(opLock.writeLock());
        } else {
            opLock.writeLock().lock();
        }
    }

    /** Takes {@code lock}, which device operations hold shared, within {@link #reopenWait}; else EIO, saying why. */
    private void lockWithin(java.util.concurrent.locks.Lock lock) throws StoreException {
        try {
            if (lock.tryLock(reopenWaitNanos, TimeUnit.NANOSECONDS)) {
                return;
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new StoreException(StoreException.EIO, "interrupted while it waited for the devices' operations", e);
        }
        throw new StoreException(StoreException.EIO, "a journal device operation did not end within "
                + TimeUnit.NANOSECONDS.toMillis(reopenWaitNanos) + " ms: the disk may hang");
    }

    /**
     * A change to MapDB's structures failed part way (a page it read failed, as a bad sector
     * does): what it changed in memory before must not be committed, so the store takes no more
     * changes until it is opened again, which starts from the last commit and the redo log (what
     * was flushed is there). Found by the read-fault enumeration: a rename over a device, whose
     * commit had returned, failed in freeing that device's records (MapDB's delete read a page of
     * its free list), and the store went on committing.
     */
    private void breakOff(String what, RuntimeException e) {
        broken = new StoreException(StoreException.EIO, "journal store " + file + ": " + what + " failed part way ("
                + e.getMessage() + "): it takes no more changes until it is opened again (by its next checkpoint, "
                + "or vmfuse journal reopen; what was flushed is in its redo log)", e);
        log.error("{}", broken.getMessage());
    }

    /** Whether the store takes no more changes until it is opened again (a change failed part way). */
    public boolean broken() {
        return broken != null;
    }

    /** Why the store takes no more changes ({@link #broken}), or null. */
    public String brokenReason() {
        StoreException b = broken;
        return b == null ? null : b.getMessage();
    }

    /** The least time between two reopens a checkpoint makes on its own (see {@link #checkpoint}). */
    static final long AUTO_REOPEN_NANOS = 60_000_000_000L;
    /** The least time between two reopens a checkpoint makes ({@link #AUTO_REOPEN_NANOS}; a test's may be shorter). */
    private volatile long autoReopenNanos = AUTO_REOPEN_NANOS;
    /** The longest a reopen waits for device operations in flight before it is refused. */
    static final long REOPEN_WAIT_NANOS = 10_000_000_000L;
    private volatile long reopenWaitNanos = REOPEN_WAIT_NANOS;
    /** When the last reopen began (System.nanoTime). Guarded by this. */
    private long lastReopen = System.nanoTime() - AUTO_REOPEN_NANOS;
    private final AtomicLong reopens = new AtomicLong();

    /**
     * Opens the store's files again in place, as a new mount would, while its devices stay
     * served: closes MapDB, the blocks file and the redo log without committing, opens them
     * again (the last commit, and the redo log replayed over it), and commits. What a
     * {@link #breakOff} lost in memory is gone; what the store had taken is not:
     * <ul>
     * <li>a device in flush mode keeps its object (every handle on it goes on) and reads as
     *     before: each of its changes was appended to the redo log before it returned, and the
     *     log is replayed from the files (forced or not, they are the same files);
     * <li>a device in close mode that changed since the last commit had its changes only in
     *     memory and in what the broken store had not committed: its object is lost (every
     *     operation on it fails, EIO, saying so; the next open of its name gets the device as
     *     its last checkpoint left it), so no guest goes on over contents that went back in time;
     * <li>devices waiting on memory, or on the store, wait for the reopen (a {@link Parking}),
     *     then go on.
     * </ul>
     * Before it closes anything it reads the files an open reads, and a store that is not broken
     * first commits what memory holds (with no device changing meanwhile, so that nothing is
     * lost): if that fails, the reopen is refused and the store goes on as it was. An open that
     * fails after the files were closed (a commit the disk refuses) leaves them closed: every
     * device operation fails (EIO) until a reopen succeeds. Returns how many close-mode devices
     * lost their changes.
     */
    public int reopen() throws StoreException {
        boolean interrupted = Thread.interrupted(); // as in checkpoint(): an interrupt would close the files for good
        try {
            return Parking.parked(() -> reopenLocked("asked for"), () -> busy("reopen"));
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** Close-mode devices lost by reopens since the last one that succeeded (one that failed lost them too). Guarded by this. */
    private final List<String> lostSinceReopen = new ArrayList<>();

    private synchronized int reopenLocked(String why) throws StoreException {
        if (closed) {
            throw new StoreException(StoreException.EIO, "journal store " + file + " is closed");
        }
        lastReopen = System.nanoTime();
        // First what may take long, with every device going on: the files read whole, and a store
        // that is not broken checkpointed (a failed fdatasync, say). If either fails, the reopen is
        // refused and nothing is closed.
        StoreException was = broken;
        try {
            readable();
        } catch (IOException e) {
            throw refused("(" + e.getMessage() + ")", was, null, e);
        }
        if (was == null && attached) {
            try {
                checkpointLocked(false, true);
            } catch (StoreException e) {
                if (broken == null) { // the disk does not take a commit: an open, which commits, would fail too
                    throw refused("(the checkpoint before it failed: " + e.getMessage() + ")", null, e.errno(), e);
                }
            }
            was = broken;
        }
        // Every device operation done, and none until the files are open. An operation that does not
        // end (an fdatasync on a hung disk) refuses the reopen rather than hold the store's monitor,
        // and the thread that asked (the timer, a control request), without a bound. The checkpoint
        // above waits for the device changes in flight as long (opLock); but its drain waits for
        // each device's monitor as every checkpoint does, with no bound: a read hung on the disk
        // holds its device's, and holds up a reopen that has that device's changes to commit.
        try {
            lockWithin(reopenLock.writeLock());
        } catch (StoreException e) {
            throw refused("(" + e.getMessage() + ")", was, null, e);
        }
        try {
            if (was == null && attached) {
                try {
                    checkpointLocked(false, false); // what came since the one above, with no device changing: all committed
                } catch (StoreException e) {
                    if (broken == null) {
                        throw refused("(the checkpoint before it failed: " + e.getMessage() + ")", null, e.errno(), e);
                    }
                }
                was = broken;
            }
            log.warn("journal store {}: opening it again in place ({}{})", file, why,
                    was != null ? "; it was broken: " + was.getMessage() : "");
            detach();
            broken = null;
            lostSinceReopen.addAll(devices.lostChanges());
            try {
                long replayed = attach();
                reopens.incrementAndGet();
                int lost = lostSinceReopen.size();
                log.warn("journal store {}: opened again in place: devices={} replayed={} close-mode devices that "
                        + "lost what was written since their last checkpoint: {}", file, devices.size(), replayed,
                        lost == 0 ? "none" : String.join(", ", lostSinceReopen));
                lostSinceReopen.clear();
                return lost;
            } catch (StoreException | RuntimeException | Error e) {
                StoreException se = new StoreException(StoreException.EIO, "journal store " + file + " could not be "
                        + "opened again (" + e.getMessage() + "): every journal device fails until a reopen succeeds "
                        + "(vmfuse journal reopen, or the next checkpoint after " + AUTO_REOPEN_NANOS / 1_000_000_000L
                        + " s, or a remount)" + (lostSinceReopen.isEmpty() ? ""
                        : "; close-mode devices that lost what was written since their last checkpoint: "
                                + String.join(", ", lostSinceReopen)), e);
                broken = se;
                budget.checkpointFailed(se);
                log.error("{}", se.getMessage());
                if (e instanceof Error err) {
                    throw err;
                }
                throw se;
            }
        } finally {
            reopenLock.writeLock().unlock();
        }
    }

    /** A reopen refused before it closed anything: the store goes on as it was; writers waiting for memory are told. */
    private StoreException refused(String why, StoreException was, Integer errno, Exception cause) {
        StoreException se = new StoreException(errno != null ? errno : StoreException.EIO, "journal store " + file
                + " cannot be opened again yet " + why + "; it goes on as it is" + (was != null ? ": "
                + was.getMessage() : ""), cause);
        budget.checkpointFailed(se);
        log.error("{}", se.getMessage());
        return se;
    }

    /**
     * Reads the files an open reads, whole (the store file, its commit file, the redo log's
     * segments; the blocks file is read block by block as devices are): before a reopen closes
     * anything, so that a disk that still fails those reads leaves the store as it was, broken but
     * serving what it can (flush-mode devices write and flush through the redo log until memory
     * fills), instead of closed.
     */
    private void readable() throws IOException {
        ByteBuffer chunk = ByteBuffer.allocate(1 << 20);
        for (Path p : storeFiles()) {
            try (DiskFile f = disk.open(p, false)) {
                for (long at = 0, n; ; at += n) {
                    chunk.clear();
                    n = f.read(chunk, at);
                    if (n <= 0) {
                        break;
                    }
                }
            } catch (IOException e) {
                throw new IOException("reading " + p.getFileName() + " failed: " + e.getMessage(), e);
            }
        }
    }

    /**
     * Closes the store's files without committing (what MapDB holds uncommitted is dropped: the
     * files keep the last commit, and the redo log what was appended). Under reopenLock exclusive.
     */
    private void detach() {
        if (!attached) {
            return;
        }
        attached = false;
        syncsBefore.addAndGet(commits.syncs());
        skippedBefore.addAndGet(commits.skipped());
        commits.close();
        redo.close();
        volume.holdSyncs(true);
        try {
            db.close();
        } catch (RuntimeException e) {
            log.warn("journal store {}: closing MapDB: {}", file, e.getMessage());
            volume.close();
        }
        closeBlockFile();
    }

    /** How long a reopen waits for the device operations in flight to end ({@link #REOPEN_WAIT_NANOS}; a test's may be shorter). */
    void reopenWait(long nanos) {
        reopenWaitNanos = nanos;
    }

    void autoReopenAfter(long nanos) {
        autoReopenNanos = nanos;
    }

    /** Reopens since the store was opened (each a {@link #reopen}, asked for or made by a checkpoint). */
    public long reopens() {
        return reopens.get();
    }

    /**
     * During a flush-mode device's drain: commits what is drained so far once it holds
     * COMMIT_PAGES pages, so the volume's memory stays bounded by that beyond what close-mode
     * devices froze (theirs is held whole until the checkpoint commits; it is at most the memory
     * bound, and their blocks' memory is given back as it goes in). The generation stays: the log
     * segments are replayed over such a commit after a crash, which is right since every record
     * is a blind overwrite.
     */
    private void commitIfLarge() {
        if (volume.dirtyPages() >= COMMIT_PAGES) {
            for (JournalDevice d : devices.all()) {
                d.flushNodes();
            }
            db.commit();
        }
    }

    /** Pages (4 KiB) a drain buffers before an intermediate commit. */
    static final int COMMIT_PAGES = 4096;

    /**
     * What a checkpoint writes between forces while flush-mode devices are in use (their log was
     * forced since the last checkpoint): a guest's flush, an fdatasync of the redo log on the
     * same disk, waits behind what the checkpoint wrote and did not force yet, and a commit
     * writes up to COMMIT_PAGES pages twice (the commit file, then the store). Measured here,
     * jbd2-like commits (368 KiB, flush, 4 KiB, flush) through the NBD door at depth 1, a
     * checkpoint every 24 MiB of them: flush p99 4-8 ms unpaced, 1-2 ms in steps of 256 KiB (0.5
     * ms with no checkpoint at all), commits per second the same. A store of close-mode devices
     * only is checkpointed in one go per file.
     */
    static final int PACED_STEP = 256 << 10;
    /** Syncs of the redo log when the last checkpoint began (more since: flush-mode devices in use). Guarded by this. */
    private long syncsAtLastCheckpoint;

    private void failed(StoreException e) {
        touched = true; // what it did not commit is still to commit, at the next timer or at close
        budget.checkpointFailed(e);
    }

    /**
     * ENOSPC unless the store's disk has room for what a checkpoint writes: every block in memory
     * twice (its new slot, while the slot it replaces is kept until the commit is durable; a
     * format-2 block's record is written twice, the commit file, then the store) and some headroom. Nothing is touched if not:
     * the changes stay in memory and, for FLUSH devices, in the redo log.
     */
    private void checkRoom() throws StoreException {
        long need = 2 * memoryHeld() + DISK_HEADROOM;
        long free;
        try {
            free = disk.usableSpace(file);
        } catch (IOException e) {
            throw new StoreException(StoreException.EIO, "cannot stat the disk of " + file + ": " + e.getMessage(), e);
        }
        if (free < need) {
            throw new StoreException(StoreException.ENOSPC, "the disk of " + file + " is full: a checkpoint needs "
                    + (need >> 20) + " MiB, " + (free >> 20) + " MiB free; journal writes wait in memory and the redo log");
        }
    }

    /** Checkpoints committed since the store was opened. */
    public long checkpoints() {
        return checkpoints.get();
    }

    /** The time the {@link #checkpoints()} took, in all (a checkpoint that found nothing to commit is neither). */
    public long checkpointNanos() {
        return checkpointNanos.get();
    }

    /** fdatasyncs of the redo log since the store was opened; each served every flush waiting. */
    public long syncs() {
        return syncsBefore.get() + (attached ? commits.syncs() : 0);
    }

    /** Flushes of flush-mode devices that found nothing new to force since the last fdatasync. */
    public long flushesWithNothingToForce() {
        return skippedBefore.get() + (attached ? commits.skipped() : 0);
    }

    private void checkOpen() throws StoreException {
        if (closed) {
            throw new StoreException(StoreException.EIO, "journal store " + file + " is closed");
        }
        StoreException b = broken;
        if (b != null) {
            throw new StoreException(StoreException.EIO, b.getMessage(), b);
        }
    }

    /** Commits everything (CLOSE devices included) and closes the file. */
    @Override
    public synchronized void close() throws IOException {
        if (closed) {
            return;
        }
        try {
            if (attached) { // else nothing is in memory: the store never opened, or a reopen failed (and said what it lost)
                checkpoint(false);
                redo.shrink();
            }
        } catch (StoreException e) {
            throw new IOException("the last checkpoint of " + file + " failed (" + e.getMessage() + "): devices in "
                    + "flush mode are in the redo log and come back at the next mount; devices in close mode lose "
                    + "what was written since their last checkpoint", e);
        } finally {
            closed = true;
            budget.close();
            checkpointer.stop();
            if (attached) { // not after a reopen that failed: that closed the files
                attached = false;
                commits.close(); // flushes waiting find the store closed
                redo.close();
                if (broken != null) {
                    volume.holdSyncs(true); // whatever MapDB's close writes, nothing of a change left half made is committed
                }
                try {
                    db.close(); // MapDB reads its header to close: on a failed disk, that fails too
                } catch (RuntimeException e) {
                    log.warn("journal store {}: closing MapDB: {}", file, e.getMessage());
                    volume.close();
                }
                closeBlockFile(); // after MapDB, whose close may commit
            }
        }
        log.info("journal store closed file={}", file);
    }

    private void closeBlockFile() {
        if (blockFile != null) {
            try {
                blockFile.close();
            } catch (IOException e) {
                log.warn("journal store {}: closing {}: {}", file, blockFile.path(), e.getMessage());
            }
        }
    }
}
