package vmfuse.journal;

import java.util.Collection;
import java.util.HashMap;
import java.util.Map;
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

    private final HTreeMap<String, long[]> stored;
    private final Map<String, JournalDevice> live = new ConcurrentSkipListMap<>();

    DeviceCatalog(HTreeMap<String, long[]> stored) {
        this.stored = stored;
    }

    /**
     * Opens every device the catalog holds, on {@code mapdb}'s records and {@code file}'s slots
     * (each marked as used there), each seeing its store
     * through {@code view}; returns them by root record id (how the redo log names them).
     */
    Map<Long, JournalDevice> load(Store mapdb, BlockFile file, DeviceStore view) throws StoreException {
        Map<Long, JournalDevice> byRoot = new HashMap<>();
        for (Map.Entry<String, long[]> e : stored.entrySet()) {
            long[] v = e.getValue();
            RadixBlockStore blocks = RadixBlockStore.open(mapdb, v[ROOT], file);
            JournalDevice.Owner owner = v.length > PERM ? new JournalDevice.Owner((int) v[UID], (int) v[GID], (int) v[PERM])
                    : JournalDevice.Owner.ROOT;
            JournalDevice d = new JournalDevice(view, e.getKey(), blocks, v[SIZE], Durability.values()[(int) v[MODE]],
                    v[CREATED], v[FLUSHED], owner);
            live.put(e.getKey(), d);
            byRoot.put(v[ROOT], d);
        }
        return byRoot;
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
