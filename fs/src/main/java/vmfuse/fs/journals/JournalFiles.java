package vmfuse.fs.journals;

import static vmfuse.fs.nativeio.Native.*;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

import jnr.ffi.Pointer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import vmfuse.fs.FsException;
import vmfuse.fs.Node;
import vmfuse.fs.space.ReleaseLedger;
import vmfuse.fs.volume.JournalVolume;
import vmfuse.journal.Durability;
import vmfuse.journal.JournalDevice;
import vmfuse.journal.JournalStore;
import vmfuse.journal.StoreException;

/**
 * The journals/ directory: each journal device of the {@link JournalStore} as a regular file
 * whose size is the device's and whose st_blocks counts the blocks really stored. Creating a
 * file makes a device (of the mount's default durability), writing past its end grows it,
 * truncate sets its size, fsync is the device's flush, PUNCH_HOLE and ZERO_RANGE free its
 * blocks, unlink deletes it with every block. An open device is a {@link JournalVolume}; the
 * last close of a device of durability CLOSE commits it.
 */
public final class JournalFiles {
    private static final Logger log = LoggerFactory.getLogger(JournalFiles.class);

    private final JournalStore store;
    private final Durability defaultDurability;
    private final ReleaseLedger ledger;
    /** Open volumes by device (a device's identity survives its renames). */
    private final Map<JournalDevice, Integer> opens = new ConcurrentHashMap<>();
    /**
     * Devices unlinked or replaced while a door still had them open that libfuse did not hide
     * (it hides only what it counts open: not the NBD door's opens): kept under a hidden name of
     * ours and deleted at their last close, as an unlinked file is.
     */
    private final Set<JournalDevice> setAside = ConcurrentHashMap.newKeySet();
    private final AtomicLong setAsideCount = new AtomicLong();

    public JournalFiles(JournalStore store, Durability defaultDurability, ReleaseLedger ledger) {
        this.store = store;
        this.defaultDurability = defaultDurability;
        this.ledger = ledger;
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

    /** ENOENT unless the device exists. */
    public void check(String name) throws FsException {
        device(name);
    }

    /** A regular file, of its owner and mode (root's, 0600, when made): its size, its stored blocks, its times. */
    public void stat(String name, Pointer statbuf) throws FsException {
        JournalVolume.stat(device(name), statbuf);
    }

    /**
     * chown of a device (the kernel lets only root do it): -1 keeps that id, as chown(2) takes it.
     * Committed to the store before it returns.
     */
    public void chown(String name, int uid, int gid) throws FsException {
        setOwner(name, o -> new JournalDevice.Owner(uid == -1 ? o.uid() : uid, gid == -1 ? o.gid() : gid, o.mode()));
    }

    /** chmod of a device (its owner or root): the permission bits. Committed before it returns. */
    public void chmod(String name, int mode) throws FsException {
        setOwner(name, o -> new JournalDevice.Owner(o.uid(), o.gid(), mode));
    }

    private void setOwner(String name, java.util.function.UnaryOperator<JournalDevice.Owner> change) throws FsException {
        try {
            store.setOwner(name, change);
        } catch (StoreException e) {
            throw fail(e);
        }
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

    /** Creates a device of size 0 (truncate or writes give it its size), or finds it, and opens it. */
    public JournalVolume create(String name) throws FsException {
        JournalDevice d = store.device(name);
        if (d == null) {
            try {
                d = store.create(name, 0, defaultDurability);
            } catch (StoreException e) {
                throw fail(e);
            }
        }
        return volume(d);
    }

    public JournalVolume open(String name) throws FsException {
        return volume(device(name));
    }

    private JournalVolume volume(JournalDevice d) {
        opens.merge(d, 1, Integer::sum);
        return new JournalVolume(d, ledger, this::closed);
    }

    /** A volume closed; a CLOSE device is persisted when its last one closes, one set aside is deleted. */
    private void closed(JournalVolume v) throws FsException {
        JournalDevice d = v.device();
        boolean last = opens.compute(d, (k, n) -> n == null || n <= 1 ? null : n - 1) == null;
        if (last && setAside.remove(d)) {
            unlink(d.name());
        } else if (last && d.durability() == Durability.CLOSE) {
            checkpoint();
        }
    }

    /**
     * Moves device {@code name} to a hidden name of ours if a door has it open, for its last
     * close to delete ({@link #setAside}); whether it did. Before an unlink of it, or a rename
     * onto it, that would otherwise delete the blocks under a running VM's journal.
     */
    private boolean setAsideIfOpen(String name) throws FsException {
        JournalDevice d = store.device(name);
        if (d == null || !opens.containsKey(d)) {
            return false;
        }
        String hidden = Node.HIDDEN_PREFIX + "vmfuse" + Long.toHexString(System.nanoTime()) + "."
                + setAsideCount.incrementAndGet();
        rename(name, hidden, false);
        setAside.add(d);
        if (!opens.containsKey(d) && setAside.remove(d)) { // its last close came meanwhile
            unlink(hidden);
            return true;
        }
        log.info("journal device={} unlinked or replaced while open: kept as {} until its last close", name, hidden);
        return true;
    }

    /** Whether device {@code name} is open through a door. */
    public boolean isOpen(String name) {
        JournalDevice d = store.device(name);
        return d != null && opens.containsKey(d);
    }

    /** Sets a device's size by name (truncate(2) without an open). */
    public void truncate(String name, long size) throws FsException {
        JournalVolume.truncate(device(name), size, ledger);
    }

    /**
     * Deletes a device and every block of it; one a door has open is kept, hidden, until its
     * last close (libfuse hides what the mount has open before it comes here).
     */
    public void unlink(String name) throws FsException {
        if (name.startsWith(Node.HIDDEN_PREFIX) && store.device(name) == null) {
            return;
        }
        if (setAsideIfOpen(name)) {
            return;
        }
        JournalDevice d = device(name);
        long bytes = d.bytesStored();
        try {
            store.delete(name);
        } catch (StoreException e) {
            throw fail(e);
        }
        ledger.record(ReleaseLedger.device(name), 0, d.size(), bytes, ReleaseLedger.Reason.UNLINK);
        ledger.forget(ReleaseLedger.device(name));
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

    /**
     * Renames a device; libfuse's hide of a device unlinked or replaced while open is one too: it
     * is kept under the hidden name (and out of listings) until libfuse unlinks that after the
     * last close, when its release is counted.
     */
    public void rename(String from, String to) throws FsException {
        rename(from, to, true);
    }

    /** As {@link #rename(String, String)}; unless {@code replace}, EEXIST if {@code to} exists. */
    public void rename(String from, String to, boolean replace) throws FsException {
        if (replace && !from.equals(to) && store.device(from) != null && setAsideIfOpen(to)) {
            replace = false; // nothing is under the name now; what was keeps its blocks until closed
        }
        try {
            store.rename(from, to, replace);
        } catch (StoreException e) {
            throw fail(e);
        }
        ledger.renamed(ReleaseLedger.device(from), ReleaseLedger.device(to)); // its counts go with it, as an image's
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
