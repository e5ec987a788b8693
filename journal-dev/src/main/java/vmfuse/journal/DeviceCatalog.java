package vmfuse.journal;

import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentSkipListMap;

import org.mapdb.HTreeMap;
import org.mapdb.Store;

/**
 * A journal store's devices by name: the live ones, and their catalog in MapDB, the "devices"
 * map of name -> long[8] {root record id of the device's RadixBlockStore, size in bytes (as the
 * last checkpoint froze it), durability (ordinal), created, last flush (ms since the epoch), uid,
 * gid, permission bits}. An entry of 5 (written before devices had owners) is root's, 0600.
 *
 * <p>The live map is changed under the store's monitor and read without it (a lookup never
 * waits on a checkpoint); the catalog is written by checkpoints ({@link #record}) and by the
 * removals a delete or rename makes, and is committed with MapDB.
 */
final class DeviceCatalog {
    private static final int ROOT = 0;
    private static final int SIZE = 1;
    private static final int MODE = 2;
    private static final int CREATED = 3;
    private static final int FLUSHED = 4;
    private static final int UID = 5;
    private static final int GID = 6;
    private static final int PERM = 7;

    /** The catalog of the store's files as last opened (a reopen opens them again). */
    private HTreeMap<String, long[]> stored;
    private final Map<String, JournalDevice> live = new ConcurrentSkipListMap<>();

    /**
     * Serves every device {@code catalog} holds, on {@code mapdb}'s records and {@code file}'s
     * slots (each marked as used there), each seeing its store through {@code view}; returns them
     * by root record id (how the redo log names them). When the store's files are opened again in
     * place (JournalStore#reopen), a device already served under a name the catalog holds keeps
     * its object (its handles go on), reattached to the files, unless it is lost; one the
     * catalog no longer holds is lost (see {@link JournalDevice#lose}).
     */
    Map<Long, JournalDevice> load(HTreeMap<String, long[]> catalog, Store mapdb, BlockFile file, DeviceStore view)
            throws StoreException {
        stored = catalog;
        Map<Long, JournalDevice> byRoot = new HashMap<>();
        Set<String> names = new HashSet<>();
        for (Map.Entry<String, long[]> e : catalog.entrySet()) {
            String name = e.getKey();
            long[] v = e.getValue();
            RadixBlockStore blocks = RadixBlockStore.open(mapdb, v[ROOT], file);
            JournalDevice.Owner owner = v.length > PERM ? new JournalDevice.Owner((int) v[UID], (int) v[GID], (int) v[PERM])
                    : JournalDevice.Owner.ROOT;
            Durability mode = Durability.values()[(int) v[MODE]];
            JournalDevice d = live.get(name);
            if (d != null && !d.lost() && d.durability() == mode) {
                d.reattach(blocks, v[SIZE], owner);
            } else {
                d = new JournalDevice(view, name, blocks, v[SIZE], mode, v[CREATED], v[FLUSHED], owner);
                live.put(name, d);
            }
            names.add(name);
            byRoot.put(v[ROOT], d);
        }
        for (JournalDevice d : live.values()) {
            if (!names.contains(d.name())) {
                live.remove(d.name());
                d.lose("journal device " + d.name() + " is not in its store's last commit: the store was opened "
                        + "again (see the daemon's log)");
            }
        }
        return byRoot;
    }

    /**
     * Before the store's files are opened again in place: every close-mode device changed since
     * the last commit is lost (memory held those changes, and the files do not: its object goes
     * on no further); returns how many. Its name is served again by a new object, as the last
     * commit left it.
     */
    List<String> lostChanges() {
        List<String> names = new ArrayList<>();
        for (JournalDevice d : live.values()) {
            if (d.durability() == Durability.CLOSE && !d.lost() && d.changedSinceCommit()) {
                d.lose("journal device " + d.name() + " (close mode) lost what was written to it since its last "
                        + "checkpoint: its store was opened again after a failure (see the daemon's log); close it and "
                        + "open it again to get it as that checkpoint left it");
                names.add(d.name());
            }
        }
        return names;
    }

    /** The last checkpoint committed what it froze of every device. */
    void committed() {
        for (JournalDevice d : live.values()) {
            d.committed();
        }
    }

    JournalDevice get(String name) {
        return live.get(name);
    }

    Collection<JournalDevice> all() {
        return live.values();
    }

    int size() {
        return live.size();
    }

    /** Serves {@code d} under its name (the next checkpoint records it). */
    void put(JournalDevice d) {
        live.put(d.name(), d);
    }

    /** Stops serving a name; the catalog keeps its entry until {@link #unrecord}. */
    void drop(String name) {
        live.remove(name);
    }

    /** Takes a name out of the catalog (committed with the next MapDB commit). */
    void unrecord(String name) {
        stored.remove(name);
    }

    /** Writes a device's size (as frozen), mode, times and owner to the catalog (a checkpoint, which commits it). */
    void record(JournalDevice d) {
        JournalDevice.Owner o = d.owner();
        stored.put(d.name(), new long[] {d.rootRecid(), d.frozenSize(), d.durability().ordinal(), d.created(),
                d.lastFlush(), o.uid(), o.gid(), o.mode()});
    }
}
