package vmfuse.fs.journals;

import static vmfuse.fs.nativeio.Native.*;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

import jnr.ffi.Pointer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import ru.serce.jnrfuse.struct.FileStat;
import vmfuse.journal.Durability;
import vmfuse.journal.JournalDevice;
import vmfuse.journal.JournalStore;
import vmfuse.journal.StoreException;
import vmfuse.fs.FsException;
import vmfuse.fs.Node;
import vmfuse.fs.space.ReleaseLedger;

/**
 * The journals/ directory: each journal device of the {@link JournalStore} as a regular file
 * whose size is the device's and whose st_blocks counts the blocks really stored. Creating a
 * file makes a device (of the mount's default durability), writing past its end grows it,
 * truncate sets its size, fsync is the device's flush, PUNCH_HOLE and ZERO_RANGE free its
 * blocks, unlink deletes it with every block.
 *
 * <p>Open journals get file handles from {@link #FH_BASE} up, apart from image handles (which
 * are backing descriptors).
 */
public final class JournalFiles {
    private static final Logger log = LoggerFactory.getLogger(JournalFiles.class);
    static final long FH_BASE = 1L << 40;

    private final JournalStore store;
    private final Durability defaultDurability;
    private final ReleaseLedger ledger;
    private final AtomicLong nextFh = new AtomicLong(FH_BASE);
    private final Map<Long, JournalDevice> open = new ConcurrentHashMap<>();

    public JournalFiles(JournalStore store, Durability defaultDurability, ReleaseLedger ledger) {
        this.store = store;
        this.defaultDurability = defaultDurability;
        this.ledger = ledger;
    }

    public static boolean owns(long fh) {
        return fh >= FH_BASE;
    }

    private static FsException fail(StoreException e) {
        return new FsException(e.errno(), e.getMessage());
    }

    private JournalDevice device(String name) throws FsException {
        JournalDevice d = store.device(name);
        if (d == null) {
            throw new FsException(ENOENT, "no journal device " + name);
        }
        return d;
    }

    private JournalDevice handle(long fh) throws FsException {
        JournalDevice d = open.get(fh);
        if (d == null) {
            throw new FsException(EBADF, "no open journal device for fh " + fh);
        }
        return d;
    }

    /** ENOENT unless the device exists. */
    public void check(String name) throws FsException {
        device(name);
    }

    /** A regular file, mode 0600, owned by root: the device's size, its stored blocks, its times. */
    public void stat(String name, FileStat st) throws FsException {
        fill(device(name), st);
    }

    public void fstat(long fh, FileStat st) throws FsException {
        fill(handle(fh), st);
    }

    private static void fill(JournalDevice d, FileStat st) {
        st.st_mode.set(S_IFREG | 0600);
        st.st_nlink.set(1);
        st.st_size.set(d.size());
        st.st_blocks.set(d.bytesStored() / 512);
        st.st_blksize.set(4096);
        long mtime = Math.max(d.created(), d.lastFlush());
        st.st_mtim.tv_sec.set(mtime / 1000);
        st.st_mtim.tv_nsec.set((mtime % 1000) * 1_000_000);
        st.st_ctim.tv_sec.set(mtime / 1000);
        st.st_atim.tv_sec.set(mtime / 1000);
    }

    /** Device names, hidden ones (libfuse's .fuse_hidden for unlinked open files) left out. */
    public List<String> list() {
        List<String> names = new ArrayList<>();
        for (JournalDevice d : store.list()) {
            if (!d.name().startsWith(Node.HIDDEN_PREFIX)) {
                names.add(d.name());
            }
        }
        return names;
    }

    /** Creates a device of size 0 (truncate or writes give it its size) and opens it. */
    public long create(String name) throws FsException {
        JournalDevice d = store.device(name);
        if (d == null) {
            try {
                d = store.create(name, 0, defaultDurability);
            } catch (StoreException e) {
                throw fail(e);
            }
        }
        return register(d);
    }

    public long open(String name) throws FsException {
        return register(device(name));
    }

    private long register(JournalDevice d) {
        long fh = nextFh.getAndIncrement();
        open.put(fh, d);
        return fh;
    }

    /**
     * Each FUSE thread's buffer between the kernel's and the device's bytes (a request is at most
     * max_read or max_write, 128 KiB by default): a new array per request was 512 MiB of garbage
     * per 512 MiB written, and collections that stopped every FUSE thread.
     */
    private static final ThreadLocal<byte[]> BUFFER = ThreadLocal.withInitial(() -> new byte[128 << 10]);

    private static byte[] buffer(long size) {
        byte[] b = BUFFER.get();
        if (b.length < size) {
            b = new byte[(int) size];
            BUFFER.set(b);
        }
        return b;
    }

    public int read(long fh, Pointer buf, long size, long offset) throws FsException {
        JournalDevice d = handle(fh);
        byte[] b = buffer(size);
        try {
            int n = d.read(offset, b, 0, (int) size);
            buf.put(0, b, 0, n);
            return n;
        } catch (StoreException e) {
            throw fail(e);
        }
    }

    public int write(long fh, Pointer buf, long size, long offset) throws FsException {
        JournalDevice d = handle(fh);
        byte[] b = buffer(size);
        buf.get(0, b, 0, (int) size);
        try {
            d.write(offset, b, 0, (int) size);
            return (int) size;
        } catch (StoreException e) {
            throw fail(e);
        }
    }

    /** fsync/fdatasync: the device's flush (for FLUSH devices, a sync of the redo log). */
    public void fsync(long fh) throws FsException {
        try {
            handle(fh).flush();
        } catch (StoreException e) {
            throw fail(e);
        }
    }

    /** Closes a handle; a CLOSE device is persisted when its last handle closes. */
    public void release(long fh) throws FsException {
        JournalDevice d = open.remove(fh);
        if (d == null) {
            throw new FsException(EBADF, "no open journal device for fh " + fh);
        }
        boolean last = open.values().stream().noneMatch(x -> x == d);
        if (last && d.durability() == Durability.CLOSE) {
            checkpoint();
        }
    }

    public void truncate(String name, long size) throws FsException {
        truncate(device(name), size);
    }

    public void ftruncate(long fh, long size) throws FsException {
        truncate(handle(fh), size);
    }

    private void truncate(JournalDevice d, long size) throws FsException {
        long before = d.bytesStored();
        long oldSize = d.size();
        try {
            d.truncate(size);
        } catch (StoreException e) {
            throw fail(e);
        }
        if (size < oldSize) {
            ledger.record(JOURNAL_PREFIX + d.name(), size, oldSize - size, before - d.bytesStored(),
                    ReleaseLedger.Reason.TRUNCATE);
        }
    }

    static final String JOURNAL_PREFIX = "journals/";

    /** PUNCH_HOLE and ZERO_RANGE free the device's blocks; allocation only sets the size. */
    public void fallocate(long fh, int mode, long offset, long length) throws FsException {
        JournalDevice d = handle(fh);
        long before = d.bytesStored();
        boolean keepSize = (mode & FALLOC_FL_KEEP_SIZE) != 0;
        try {
            switch (mode) {
                case FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE,
                        FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE -> {
                    d.zero(offset, length);
                    ledger.record(JOURNAL_PREFIX + d.name(), offset, length, before - d.bytesStored(),
                            (mode & FALLOC_FL_PUNCH_HOLE) != 0 ? ReleaseLedger.Reason.PUNCH_HOLE
                                    : ReleaseLedger.Reason.ZERO_RANGE);
                }
                case 0, FALLOC_FL_KEEP_SIZE -> { }
                default -> throw new FsException(EOPNOTSUPP, "fallocate mode 0x" + Integer.toHexString(mode)
                        + " is not supported");
            }
            if (!keepSize && offset + length > d.size()) {
                d.truncate(offset + length);
            }
        } catch (StoreException e) {
            throw fail(e);
        }
    }

    /** Deletes a device and every block of it (its open handles keep it until they close). */
    public void unlink(String name) throws FsException {
        if (name.startsWith(Node.HIDDEN_PREFIX) && store.device(name) == null) {
            return;
        }
        JournalDevice d = device(name);
        long bytes = d.bytesStored();
        try {
            store.delete(name);
        } catch (StoreException e) {
            throw fail(e);
        }
        ledger.record(JOURNAL_PREFIX + name, 0, d.size(), bytes, ReleaseLedger.Reason.UNLINK);
        ledger.forget(JOURNAL_PREFIX + name);
    }

    /**
     * libfuse hiding a device unlinked or replaced while open: kept under the hidden name (and
     * out of listings) until libfuse unlinks that after the last close, when its release is
     * counted; a refused rename renames it back (see VmFuseFs).
     */
    public void hide(String name, String hiddenAs) throws FsException {
        rename(name, hiddenAs);
    }

    /** Deletes the hidden devices a crash left (their handles are gone); returns how many. */
    public int dropHidden() throws FsException {
        int n = 0;
        for (JournalDevice d : store.list()) {
            if (d.name().startsWith(Node.HIDDEN_PREFIX)) {
                unlink(d.name());
                n++;
            }
        }
        return n;
    }

    public void rename(String from, String to) throws FsException {
        try {
            store.rename(from, to);
        } catch (StoreException e) {
            throw fail(e);
        }
        log.info("journal rename device={} to={}", from, to);
    }

    /** Commits every device (the timer of CLOSE devices). */
    public void checkpoint() throws FsException {
        try {
            store.checkpoint();
        } catch (StoreException e) {
            throw fail(e);
        }
    }

    public JournalStore store() {
        return store;
    }
}
