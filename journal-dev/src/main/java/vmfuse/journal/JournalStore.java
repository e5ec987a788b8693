package vmfuse.journal;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantReadWriteLock;

import org.mapdb.Atomic;
import org.mapdb.DB;
import org.mapdb.DBMaker;
import org.mapdb.HTreeMap;
import org.mapdb.Serializer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/*
 * The journal devices of one vmfuse store, in one MapDB file (STORE/journals.db).
 *
 * On-disk format, version 1 (FORMAT below):
 *   - MapDB 3.1 file store with its write-ahead log (transactionEnable): a commit is atomic,
 *     and after a crash the file opens at the last commit.
 *   - "vmfuse.format"  (atomic string): "vmfuse-journal-store 1". Anything else is refused.
 *   - "devices"        (hash map, name -> long[5]): root record id of the device's
 *                      RadixBlockStore, size in bytes, durability (ordinal), created and last
 *                      flush (ms since the epoch); written by each checkpoint.
 *   - "vmfuse.generation" (atomic long): the number of the last checkpoint.
 *   - the RadixBlockStore records of every device.
 *
 * Durability. Every change to a FLUSH device is also appended to the RedoLog
 * (STORE/journals.db.redo); a flush waits until the log is forced to disk, and one committer
 * thread serves every waiting flush with a single fdatasync (group commit, as BookKeeper's
 * journal does). A checkpoint commits the MapDB store (every change of every device, CLOSE ones
 * included) and restarts the log; the caller's timer, close(), creating, deleting and renaming a
 * device checkpoint. Opening replays the log onto the last checkpoint.
 *
 * Locks: a device change holds opLock shared, then the device's monitor (so its log records are
 * in the order of its changes); a checkpoint holds this store's monitor, then opLock exclusive.
 */
public final class JournalStore implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(JournalStore.class);
    static final String FORMAT = "vmfuse-journal-store 1";
    private static final String FORMAT_PREFIX = "vmfuse-journal-store ";

    private static final int ROOT = 0;
    private static final int SIZE = 1;
    private static final int MODE = 2;
    private static final int CREATED = 3;
    private static final int FLUSHED = 4;

    private final Path file;
    private final DB db;
    private final HTreeMap<String, long[]> catalog;
    /** Open devices by name. Guarded by this. */
    private final Map<String, JournalDevice> devices = new TreeMap<>();
    private final BlockingQueue<CompletableFuture<Void>> flushes = new ArrayBlockingQueue<>(4096);
    private final Thread committer;
    private final ReentrantReadWriteLock opLock = new ReentrantReadWriteLock();
    private RedoLog redo;
    private Atomic.Long generation;
    /** A checkpoint is forced once the redo log grows past this. */
    static final long REDO_LIMIT = 256L << 20;
    private volatile boolean closed;
    private final AtomicLong syncs = new AtomicLong();

    private JournalStore(Path file, DB db, HTreeMap<String, long[]> catalog) {
        this.file = file;
        this.db = db;
        this.catalog = catalog;
        this.committer = new Thread(this::commitLoop, "journal-commit");
        this.committer.setDaemon(true);
    }

    /**
     * Opens the store at {@code file}, creating it if absent. A file that is not a journal store,
     * is corrupt, or has another format version is refused with the reason, and left untouched.
     */
    public static JournalStore open(Path file) throws StoreException {
        boolean exists = Files.exists(file);
        if (exists) {
            check(file);
        }
        DB db;
        try {
            db = DBMaker.fileDB(file.toFile()).fileMmapEnableIfSupported().transactionEnable().make();
        } catch (RuntimeException e) {
            throw new StoreException(StoreException.EIO, "cannot open journal store " + file + ": " + e.getMessage(), e);
        }
        try {
            Atomic.String format = db.atomicString("vmfuse.format").createOrOpen();
            if (!exists) {
                format.set(FORMAT);
            }
            HTreeMap<String, long[]> catalog = db.hashMap("devices", Serializer.STRING, Serializer.LONG_ARRAY)
                    .createOrOpen();
            Atomic.Long generation = db.atomicLong("vmfuse.generation").createOrOpen();
            db.commit();
            JournalStore store = new JournalStore(file, db, catalog);
            store.generation = generation;
            Map<Long, JournalDevice> byRoot = new java.util.HashMap<>();
            for (Map.Entry<String, long[]> e : catalog.entrySet()) {
                long[] v = e.getValue();
                RadixBlockStore blocks = RadixBlockStore.open(db.getStore(), v[ROOT]);
                JournalDevice d = new JournalDevice(store, e.getKey(), blocks, v[SIZE],
                        Durability.values()[(int) v[MODE]], v[CREATED], v[FLUSHED]);
                store.devices.put(e.getKey(), d);
                byRoot.put(v[ROOT], d);
            }
            long[] replayed = new long[1];
            store.redo = RedoLog.open(redoFile(file), generation.get(), (type, root, a, b, data) -> {
                JournalDevice d = byRoot.get(root);
                if (d != null) { // a device deleted since is never in a log: deletes checkpoint
                    d.replay(type, a, b, data);
                }
            }, replayed);
            try {
                store.checkpoint();
            } catch (StoreException | RuntimeException e) {
                try {
                    store.redo.close();
                } catch (IOException closing) {
                    e.addSuppressed(closing);
                }
                throw e;
            }
            store.committer.start();
            log.info("journal store opened file={} devices={} replayed={}", file, store.devices.size(), replayed[0]);
            return store;
        } catch (StoreException | RuntimeException e) {
            db.close();
            if (e instanceof StoreException se) {
                throw se;
            }
            throw new StoreException(StoreException.EIO, "cannot read journal store " + file + ": " + e.getMessage(), e);
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
            if (!format.equals(FORMAT)) {
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
    public synchronized JournalDevice create(String name, long size, Durability durability) throws StoreException {
        checkOpen();
        RadixBlockStore.checkRange(0, size);
        if (devices.containsKey(name)) {
            throw new StoreException(17 /* EEXIST */, "journal device " + name + " exists");
        }
        RadixBlockStore blocks = RadixBlockStore.create(db.getStore());
        long now = System.currentTimeMillis();
        JournalDevice d = new JournalDevice(this, name, blocks, size, durability, now, 0);
        devices.put(name, d);
        checkpoint();
        log.info("journal create device={} size={} durability={}", name, size, durability.label());
        return d;
    }

    public synchronized JournalDevice device(String name) {
        return devices.get(name);
    }

    public synchronized List<JournalDevice> list() {
        return new ArrayList<>(devices.values());
    }

    /** Removes a device and every block of it. Committed before it returns. */
    public synchronized void delete(String name) throws StoreException {
        checkOpen();
        JournalDevice d = devices.remove(name);
        if (d == null) {
            throw new StoreException(2 /* ENOENT */, "no journal device " + name);
        }
        long blocks = d.blocksStored();
        opLock.writeLock().lock();
        try {
            d.destroy();
            catalog.remove(name);
        } finally {
            opLock.writeLock().unlock();
        }
        checkpoint(); // no record of the device stays in the log: its record ids may be reused
        log.info("journal delete device={} blocks={}", name, blocks);
    }

    /** Renames a device (replacing {@code to} if it exists, as rename(2) does). */
    public synchronized void rename(String from, String to) throws StoreException {
        checkOpen();
        JournalDevice d = devices.get(from);
        if (d == null) {
            throw new StoreException(2 /* ENOENT */, "no journal device " + from);
        }
        if (devices.containsKey(to)) {
            delete(to);
        }
        devices.remove(from);
        catalog.remove(from);
        d.renamed(to);
        devices.put(to, d);
        checkpoint();
    }

    /** Writes a device's size, mode and times to the catalog (a checkpoint, which commits it). */
    private void record(JournalDevice d) {
        catalog.put(d.name(), new long[] {d.rootRecid(), d.size(), d.durability().ordinal(), d.created(), d.lastFlush()});
    }

    /** Waits until everything logged so far is on disk: one fdatasync serves every waiting flush. */
    void awaitLogSync() throws StoreException {
        checkOpen();
        CompletableFuture<Void> done = new CompletableFuture<>();
        try {
            flushes.put(done);
            done.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new StoreException(StoreException.EIO, "interrupted waiting for the redo log to sync");
        } catch (ExecutionException e) {
            throw new StoreException(StoreException.EIO, "sync of the redo log of " + file + " failed: " + e.getCause(),
                    e.getCause());
        }
    }

    private void commitLoop() {
        List<CompletableFuture<Void>> batch = new ArrayList<>();
        while (!closed) {
            try {
                batch.add(flushes.take());
            } catch (InterruptedException e) {
                break;
            }
            flushes.drainTo(batch);
            try {
                redo.force();
                syncs.incrementAndGet();
                batch.forEach(f -> f.complete(null));
                if (redo.size() > REDO_LIMIT) {
                    checkpoint();
                }
            } catch (StoreException | IOException | RuntimeException e) {
                log.error("journal flush failed file={}", file, e);
                batch.forEach(f -> f.completeExceptionally(e));
            }
            batch.clear();
        }
    }

    /**
     * Commits every device to the MapDB store under the next generation and restarts the redo log
     * (the timer of CLOSE devices, unmount, changes to the catalog).
     */
    public synchronized void checkpoint() throws StoreException {
        checkOpen();
        opLock.writeLock().lock();
        try {
            for (JournalDevice d : devices.values()) {
                record(d);
            }
            long next = generation.get() + 1;
            generation.set(next);
            db.commit();
            redo.restart(next);
        } catch (RuntimeException e) {
            throw new StoreException(StoreException.EIO, "checkpoint of " + file + " failed: " + e.getMessage(), e);
        } finally {
            opLock.writeLock().unlock();
        }
    }

    /** fdatasyncs of the redo log since the store was opened; each served every flush waiting. */
    public long syncs() {
        return syncs.get();
    }

    private void checkOpen() throws StoreException {
        if (closed) {
            throw new StoreException(StoreException.EIO, "journal store " + file + " is closed");
        }
    }

    /** Commits everything (CLOSE devices included) and closes the file. */
    @Override
    public synchronized void close() throws IOException {
        if (closed) {
            return;
        }
        try {
            checkpoint();
        } catch (StoreException e) {
            throw new IOException(e.getMessage(), e);
        } finally {
            closed = true;
            committer.interrupt();
            redo.close();
            db.close();
            List<CompletableFuture<Void>> left = new ArrayList<>();
            flushes.drainTo(left);
            left.forEach(f -> f.completeExceptionally(new IllegalStateException("journal store closed")));
        }
        log.info("journal store closed file={}", file);
    }
}
