package vmfuse.journal;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import vmfuse.durable.Disk;
import vmfuse.durable.FaultyDisk.Fault;
import vmfuse.durable.FaultyDisk;
import vmfuse.durable.RealDisk;

/**
 * The model-checked enumeration of issue 13. A seeded workload on journal devices (writes,
 * zeroes, truncates, flushes, creates, deletes, renames, checkpoints, unmount and mount) runs on a
 * {@link FaultyDisk}; a dry run counts its disk calls (every write, force, truncate, punch, create,
 * rename, delete and directory sync). Then, for each call N: a run in which call N fails (EIO,
 * ENOSPC or a short write, in turn) and the workload goes on, ending in a power cut or a clean
 * unmount; and a run in which the power is cut at call N. And for each read N of the disk, a run
 * in which it fails (EIO), as a transient error or a bad sector does. After each, the store is
 * opened on what the disk kept and checked against a model:
 *   - the store opens;
 *   - its devices are the names as of a commit that returned, or as one that failed would have
 *     left them (a failed create, delete or rename may have reached the disk before it failed);
 *   - every block holds a value it held at the device's last durable point (a flush that returned,
 *     for a flush-mode device; a commit that returned, for every device) or one written after it.
 *     Each write has a value of its own, repeated over the block, so a record applied to another
 *     device, an old record replayed, or a torn block is a value the model does not allow;
 *   - after a failure the fault has passed: the store commits again (it keeps serving).
 * A loss is any of these not holding. {@code make test} runs a seeded sample of the points;
 * {@code make soak} ({@code -Dvmfuse.soak=true}) every point, of more seeds.
 */
class JournalStoreCrashTest {
    static final int BLOCK = 4096;
    static final long MEMORY = 8L << 20;
    static final int OPS = 48;
    static final String[] NAMES = {"a", "b", "c"};

    @TempDir
    Path tmp;

    enum Kind { WRITE, ZERO, TRUNCATE, FLUSH, CHECKPOINT, CREATE, DELETE, RENAME, REOPEN }

    record Op(Kind kind, String name, String other, int block, int count, Durability mode) { }

    /** A workload: ops chosen without looking at outcomes (an op on a missing device is skipped). */
    static List<Op> workload(long seed) {
        Random r = new Random(seed);
        List<Op> ops = new ArrayList<>();
        ops.add(new Op(Kind.CREATE, "a", null, 0, 0, Durability.FLUSH));
        ops.add(new Op(Kind.CREATE, "b", null, 0, 0, Durability.CLOSE));
        while (ops.size() < OPS) {
            int p = r.nextInt(100);
            String name = NAMES[r.nextInt(NAMES.length)];
            String other = NAMES[r.nextInt(NAMES.length)];
            Kind k = p < 34 ? Kind.WRITE : p < 39 ? Kind.ZERO : p < 42 ? Kind.TRUNCATE : p < 62 ? Kind.FLUSH
                    : p < 72 ? Kind.CHECKPOINT : p < 80 ? Kind.CREATE : p < 85 ? Kind.DELETE : p < 91 ? Kind.RENAME
                    : Kind.REOPEN;
            ops.add(new Op(k, name, other, r.nextInt(12), 1 + r.nextInt(3), r.nextBoolean() ? Durability.FLUSH
                    : Durability.CLOSE));
        }
        return ops;
    }

    /** What a block may hold: now (what the store holds in memory), and what a crash may leave. */
    static final class Block {
        Set<Long> now = new HashSet<>(Set.of(0L));
        Set<Long> durable = new HashSet<>(Set.of(0L));
        Set<Long> since = new HashSet<>();

        void wrote(long value, boolean surely) {
            if (surely) {
                now.clear();
            }
            now.add(value);
            since.add(value);
        }

        void durable() {
            durable = new HashSet<>(now);
            since.clear();
        }

        boolean allows(long value) {
            return durable.contains(value) || since.contains(value);
        }

        String allowed() {
            TreeSet<Long> all = new TreeSet<>(durable);
            all.addAll(since);
            return all.toString();
        }
    }

    /** One device of the model: an identity that follows renames. */
    static final class Dev {
        final int id;
        final Durability mode;
        final Map<Integer, Block> blocks = new TreeMap<>();

        Dev(int id, Durability mode) {
            this.id = id;
            this.mode = mode;
        }

        Block block(int b) {
            return blocks.computeIfAbsent(b, x -> new Block());
        }

        void durable() {
            blocks.values().forEach(Block::durable);
        }
    }

    /** One run of the workload against the model, on one disk. */
    final class Run {
        final String label;
        final Path dir;
        FaultyDisk disk;
        JournalStore store;
        int nextId;
        /** The namespace in memory. */
        Map<String, Dev> names = new TreeMap<>();
        /** The namespaces the disk may hold: the last committed, and what each failed commit since would have made. */
        List<Map<String, Dev>> onDisk = new ArrayList<>(List.of(new TreeMap<>()));
        final List<String> losses = new ArrayList<>();

        Run(String label, Path dir, FaultyDisk disk) {
            this.label = label;
            this.dir = dir;
            this.disk = disk;
        }

        Path file() {
            return dir.resolve("journals.db");
        }

        /** Why the last open failed. */
        Exception openFailure;

        boolean open() {
            try {
                store = JournalStore.open(disk, file(), MEMORY);
                return true;
            } catch (StoreException | RuntimeException e) {
                store = null;
                openFailure = e;
                return false;
            }
        }

        /** A commit returned: the disk holds the namespace and every device as they are in memory. */
        void committed() {
            onDisk = new ArrayList<>(List.of(new TreeMap<>(names)));
            names.values().forEach(Dev::durable);
        }

        long value(int op, int i) {
            return (long) op * 100 + i + 1;
        }

        void execute(int index, Op op) throws StoreException, IOException {
            Dev d = names.get(op.name());
            switch (op.kind()) {
                case WRITE, ZERO -> {
                    if (d == null) {
                        return;
                    }
                    JournalDevice jd = store.device(op.name());
                    boolean ok = false;
                    try {
                        if (op.kind() == Kind.WRITE) {
                            ByteBuffer b = ByteBuffer.allocate(op.count() * BLOCK).order(ByteOrder.LITTLE_ENDIAN);
                            for (int i = 0; i < op.count(); i++) {
                                for (int j = 0; j < BLOCK / 8; j++) {
                                    b.putLong(value(index, i));
                                }
                            }
                            jd.write((long) op.block() * BLOCK, b.array(), 0, b.capacity());
                        } else {
                            jd.zero((long) op.block() * BLOCK, (long) op.count() * BLOCK);
                        }
                        ok = true;
                    } finally {
                        for (int i = 0; i < op.count(); i++) {
                            d.block(op.block() + i).wrote(op.kind() == Kind.WRITE ? value(index, i) : 0, ok);
                        }
                    }
                }
                case TRUNCATE -> {
                    if (d == null) {
                        return;
                    }
                    JournalDevice jd = store.device(op.name());
                    long blocks = jd.size() / BLOCK;
                    boolean ok = false;
                    try {
                        jd.truncate((long) op.block() * BLOCK);
                        ok = true;
                    } finally {
                        for (long b = op.block(); b < blocks; b++) {
                            d.block((int) b).wrote(0, ok);
                        }
                    }
                }
                case FLUSH -> {
                    if (d == null) {
                        return;
                    }
                    store.device(op.name()).flush();
                    if (d.mode == Durability.FLUSH) {
                        d.durable();
                    }
                }
                case CHECKPOINT -> {
                    long reopens = store.reopens();
                    try {
                        store.checkpoint();
                        committed();
                    } finally {
                        if (store.reopens() != reopens) { // broken, it was opened again in place: as a mount would
                            checkAndResync("an in-place reopen");
                        }
                    }
                }
                case CREATE -> {
                    if (d != null) {
                        return;
                    }
                    Dev n = new Dev(nextId++, op.mode());
                    Map<String, Dev> after = new TreeMap<>(names);
                    after.put(op.name(), n);
                    onDisk.add(after);
                    store.create(op.name(), 0, op.mode());
                    names.put(op.name(), n);
                    committed();
                }
                case DELETE -> {
                    if (d == null) {
                        return;
                    }
                    Map<String, Dev> after = new TreeMap<>(names);
                    after.remove(op.name());
                    onDisk.add(after);
                    store.delete(op.name());
                    names.remove(op.name());
                    committed();
                }
                case RENAME -> {
                    if (d == null || op.name().equals(op.other())) {
                        return;
                    }
                    Map<String, Dev> after = new TreeMap<>(names);
                    after.remove(op.name());
                    after.put(op.other(), d);
                    onDisk.add(after);
                    store.rename(op.name(), op.other());
                    names = after;
                    committed();
                }
                case REOPEN -> {
                    JournalStore s = store;
                    store = null;
                    try {
                        s.close();
                        committed();
                    } catch (IOException e) {
                        // its last checkpoint failed; it is closed all the same, and the model allows what that loses
                    }
                    if (!open() && !open()) { // a fault in the open is one call: the next open is clean
                        throw new IOException("the store does not open again");
                    }
                    checkAndResync("mount in the workload");
                }
            }
        }

        /**
         * The store as opened on what the disk kept, against the model; then the model becomes what
         * the store holds (so the workload goes on from there).
         */
        void checkAndResync(String when) throws StoreException {
            Set<String> actual = new TreeSet<>();
            store.list().forEach(jd -> actual.add(jd.name()));
            Map<String, Dev> match = null;
            String firstProblem = null;
            for (Map<String, Dev> candidate : onDisk) {
                if (!candidate.keySet().equals(actual)) {
                    continue;
                }
                String problem = contentProblem(candidate);
                if (problem == null) {
                    match = candidate;
                    break;
                }
                firstProblem = firstProblem == null ? problem : firstProblem;
            }
            if (match == null) {
                List<Set<String>> allowed = new ArrayList<>();
                onDisk.forEach(m -> allowed.add(m.keySet()));
                losses.add(label + ", " + when + ": " + (firstProblem != null ? firstProblem
                        : "devices " + actual + ", allowed " + allowed));
                return;
            }
            names = new TreeMap<>();
            for (Map.Entry<String, Dev> e : match.entrySet()) {
                Dev old = e.getValue();
                Dev now = new Dev(nextId++, old.mode);
                JournalDevice jd = store.device(e.getKey());
                for (int b : old.blocks.keySet()) {
                    Block blk = now.block(b);
                    blk.now = new HashSet<>(Set.of(read(jd, b)));
                    blk.durable();
                }
                names.put(e.getKey(), now);
            }
            onDisk = new ArrayList<>(List.of(new TreeMap<>(names)));
        }

        /** The first block of {@code candidate}'s devices that holds a value the model does not allow, or null. */
        private String contentProblem(Map<String, Dev> candidate) throws StoreException {
            for (Map.Entry<String, Dev> e : candidate.entrySet()) {
                JournalDevice jd = store.device(e.getKey());
                int last = e.getValue().blocks.isEmpty() ? 0 : ((TreeMap<Integer, Block>) e.getValue().blocks).lastKey();
                for (int b = 0; b <= last + 2; b++) {
                    Block blk = e.getValue().blocks.get(b);
                    long v = read(jd, b);
                    if (blk == null ? v != 0 : !blk.allows(v)) {
                        return "device " + e.getKey() + " (" + e.getValue().mode.label() + ") block " + b + " reads "
                                + (v == -1 ? "a torn block" : "value " + v) + ", allowed "
                                + (blk == null ? "[0]" : blk.allowed());
                    }
                }
            }
            return null;
        }
    }

    /**
     * A block's value: the long repeated over it; 0 for zeros (or past the end); -1 if not one
     * value. A read that fails is tried once more: a failed read of the disk fails that read
     * only.
     */
    static long read(JournalDevice jd, int b) throws StoreException {
        byte[] a = new byte[BLOCK];
        try {
            jd.read((long) b * BLOCK, a, 0, BLOCK);
        } catch (StoreException e) {
            jd.read((long) b * BLOCK, a, 0, BLOCK);
        }
        ByteBuffer bb = ByteBuffer.wrap(a).order(ByteOrder.LITTLE_ENDIAN);
        long v = bb.getLong(0);
        for (int i = 8; i < BLOCK; i += 8) {
            if (bb.getLong(i) != v) {
                return -1;
            }
        }
        return v;
    }

    enum Fate { FAIL, READ, CUT, NONE }

    /** What became of one run: its losses, and the calls and reads the workload made. */
    record Outcome(List<String> losses, long calls, long reads) { }

    private Path base() throws IOException {
        Path shm = Path.of("/dev/shm");
        return Files.isDirectory(shm) && Files.isWritable(shm) ? Files.createTempDirectory(shm, "vmfuse-crash") : tmp;
    }

    /**
     * Runs workload {@code seed} with {@code fate} at disk call {@code point}, then mounts what the
     * disk kept and checks it.
     */
    Outcome run(long seed, long point, Fate fate, Fault fault) throws IOException {
        Path root = Files.createTempDirectory(base(), "run");
        try {
            Path dir = Files.createDirectories(root.resolve("store"));
            FaultyDisk disk = new FaultyDisk(RealDisk.of(null), root.resolve("graveyard"), seed * 1_000_003 + point);
            disk.setUsableSpace(32L << 20); // redo segments of 2 MiB
            String label = "seed " + seed + " " + (fate == Fate.FAIL ? fault + " at call " + point
                    : fate == Fate.READ ? "EIO at read " + point
                    : fate == Fate.CUT ? "power cut at call " + point : "no fault");
            if (fate == Fate.FAIL) {
                disk.failAt(point, fault);
            } else if (fate == Fate.READ) {
                disk.failRead(point);
            } else if (fate == Fate.CUT) {
                disk.powerCutAt(point);
            }
            Run run = new Run(label, dir, disk);
            if (!run.open() && (disk.isCut() || !run.open())) {
                if (!disk.isCut()) {
                    run.losses.add(label + ": the store does not open after the fault passed: " + run.openFailure);
                    return new Outcome(run.losses, disk.calls(), disk.reads());
                }
            }
            List<Op> ops = workload(seed);
            for (int i = 0; i < ops.size() && !disk.isCut(); i++) {
                try {
                    run.execute(i, ops.get(i));
                } catch (StoreException | IOException | RuntimeException e) {
                    if (run.store == null && !disk.isCut()) {
                        run.losses.add(label + ": op " + i + " " + ops.get(i) + " left the store closed: " + e);
                        return new Outcome(run.losses, disk.calls(), disk.reads());
                    }
                }
            }
            long calls = disk.calls();
            long reads = disk.reads();
            if (fate == Fate.READ && !disk.isCut() && run.store != null && run.store.broken()) {
                // a change to MapDB failed part way: the store takes none until it is opened again
                try {
                    run.execute(ops.size(), new Op(Kind.REOPEN, "a", "a", 0, 0, Durability.FLUSH));
                } catch (StoreException | IOException | RuntimeException e) {
                    run.losses.add(label + ": the store does not open again after it broke off: " + e);
                    return new Outcome(run.losses, calls, reads);
                }
            }
            if ((fate == Fate.FAIL || fate == Fate.READ) && !disk.isCut()) {
                // The fault has passed: the store commits again. The store's own threads make a
                // varying number of calls, so the point may lie past this run's workload; then the
                // fault hits this checkpoint, and the one after it must commit.
                boolean reached = disk.failures() > 0;
                try {
                    try {
                        run.store.checkpoint();
                    } catch (StoreException e) {
                        if (reached || disk.failures() == 0) {
                            throw e;
                        }
                        run.store.checkpoint();
                    }
                    run.committed();
                } catch (StoreException e) {
                    run.losses.add(label + ": no commit after the fault passed: " + e.getMessage());
                }
            }
            if (fate == Fate.NONE || (fate != Fate.CUT && point % 2 == 1)) {
                try {
                    run.store.close();
                    run.committed();
                } catch (IOException e) {
                    // its last checkpoint failed: the model already allows what that loses
                }
            } else {
                disk.powerCut();
                if (run.store != null) {
                    try {
                        run.store.close();
                    } catch (IOException e) {
                        // the disk is gone
                    }
                }
            }
            run.disk = disk.isCut() ? disk.afterCut() : new FaultyDisk(RealDisk.of(null), root.resolve("graveyard2"), 1);
            run.disk.setUsableSpace(32L << 20);
            if (!run.open()) {
                run.losses.add(label + ": the store does not open after it: " + run.openFailure);
            } else {
                try {
                    run.checkAndResync("next mount");
                } finally {
                    try {
                        run.store.close();
                    } catch (IOException e) {
                        run.losses.add(label + ": the store does not close after the next mount: " + e.getMessage());
                    }
                }
            }
            return new Outcome(run.losses, calls, reads);
        } catch (StoreException e) {
            return new Outcome(List.of("seed " + seed + " point " + point + " " + fate + ": " + e), 0, 0);
        } finally {
            deleteTree(root);
        }
    }

    private static void deleteTree(Path p) throws IOException {
        try (var walk = Files.walk(p)) {
            walk.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        }
    }

    /** Every point of each seed (soak), or a seeded sample of them; prints the figures. */
    void enumerate(long[] seeds, int samplePerSeed) throws IOException {
        Fault[] faults = Fault.values();
        long tried = 0;
        List<String> losses = new ArrayList<>();
        for (long seed : seeds) {
            Outcome dry = run(seed, 0, Fate.NONE, null);
            assertEquals(List.of(), dry.losses(), "the workload without a fault");
            long calls = dry.calls();
            List<Long> points = new ArrayList<>();
            for (long p = 1; p <= calls; p++) {
                points.add(p);
            }
            if (samplePerSeed > 0 && samplePerSeed < calls) {
                java.util.Collections.shuffle(points, new Random(seed));
                points = points.subList(0, samplePerSeed);
            }
            for (long p : points) {
                Outcome failed = run(seed, p, Fate.FAIL, faults[(int) (p % faults.length)]);
                Outcome cut = run(seed, p, Fate.CUT, null);
                losses.addAll(failed.losses());
                losses.addAll(cut.losses());
                tried += 2;
            }
            List<Long> reads = new ArrayList<>();
            for (long p = 1; p <= dry.reads(); p++) {
                reads.add(p);
            }
            if (samplePerSeed > 0 && samplePerSeed / 2 < reads.size()) {
                java.util.Collections.shuffle(reads, new Random(-seed));
                reads = reads.subList(0, samplePerSeed / 2);
            }
            for (long p : reads) {
                losses.addAll(run(seed, p, Fate.READ, null).losses());
                tried++;
            }
            System.out.printf("journal store enumeration: seed %d, %d disk calls and %d reads in the workload, %d"
                    + " points, %d read points, %d runs%n", seed, calls, dry.reads(), points.size(), reads.size(),
                    2 * points.size() + reads.size());
        }
        System.out.printf("journal store enumeration: %d runs (each a failed call, a failed read or a power cut), %d"
                + " losses%n",
                tried, losses.size());
        losses.stream().limit(20).forEach(l -> System.out.println("  loss: " + l));
        assertTrue(losses.isEmpty(), losses.size() + " losses in " + tried + " runs; the first: "
                + losses.subList(0, Math.min(5, losses.size())));
    }

    /**
     * A close-mode device's checkpoint larger than the store's intermediate commits (COMMIT_PAGES
     * pages) is still one commit for that device: wherever the power goes in it, the device opens
     * as the commit before or as this one, never part of each. (A review found it committed in
     * steps, as a flush-mode device's drain is, whose redo log replays over them.) The cut falls
     * at 12 points spread over the checkpoint's disk calls (a seeded sample of {@code make soak}'s
     * every call).
     */
    @Test
    void aLargeCheckpointOfACloseModeDeviceIsOneCommitWhereverThePowerGoes() throws Exception {
        int blocks = JournalStore.COMMIT_PAGES + 1024;
        long calls = closeCheckpoint(blocks, Long.MAX_VALUE, false);
        assertTrue(calls > 24, "the checkpoint made " + calls + " disk calls");
        for (long at : sample(calls, 17)) {
            closeCheckpoint(blocks, at, false);
        }
    }

    /**
     * As above, with a flush-mode device beside it, whose drain commits in steps after the
     * close-mode device's (a review found those steps committing the close-mode device's new
     * blocks under its old size from the catalog: after a crash it opened neither as it was nor
     * as it became), and with the close-mode device cut to 0 and grown to twice its size.
     */
    @Test
    void aCloseModeDeviceBesideAFlushModeOneIsOneCommitWhereverThePowerGoes() throws Exception {
        int blocks = JournalStore.COMMIT_PAGES + 1024;
        long calls = closeCheckpoint(blocks, Long.MAX_VALUE, true);
        for (long at : sample(calls, 19)) {
            closeCheckpoint(blocks, at, true);
        }
    }

    /** Cut points over {@code calls} disk calls: every one under {@code make soak}, else 12 spread (seeded). */
    private static long[] sample(long calls, long seed) {
        Random r = new Random(seed);
        int points = Boolean.getBoolean("vmfuse.soak") ? (int) calls : (int) Math.min(12, calls);
        long[] at = new long[points];
        for (int i = 0; i < points; i++) {
            at[i] = points == calls ? i + 1 : 1 + i * calls / points + r.nextInt((int) Math.max(1, calls / points));
        }
        return at;
    }

    /**
     * A close-mode device of {@code blocks} blocks written whole and committed (generation 1), then
     * written whole again and checkpointed (generation 2) with the power cut at call {@code cutAt}
     * of that checkpoint; asserts the device opens as one generation. With {@code beside}, a
     * flush-mode device has a block flushed before, which must read back, and generation 2
     * follows a cut to size 0 and is twice the size, which must go with its generation. The calls
     * that checkpoint made (with no cut).
     */
    private long closeCheckpoint(int blocks, long cutAt, boolean beside) throws Exception {
        Path root = Files.createTempDirectory(base(), "close");
        try {
            Path file = Files.createDirectories(root.resolve("store")).resolve("journals.db");
            FaultyDisk disk = new FaultyDisk(RealDisk.of(null), root.resolve("graveyard"), cutAt);
            long calls;
            JournalStore store = JournalStore.open(disk, file, 64L << 20);
            try {
                JournalDevice d = store.create("c", (long) blocks * BLOCK, Durability.CLOSE);
                writeGeneration(d, blocks, 1);
                store.checkpoint();
                if (beside) {
                    JournalDevice f = store.create("f", BLOCK, Durability.FLUSH);
                    f.write(0, filled('F'), 0, BLOCK);
                    f.flush();
                    d.truncate(0);
                    d.truncate(2L * blocks * BLOCK);
                }
                writeGeneration(d, blocks, 2);
                calls = underACut(disk, cutAt, "checkpoint", store::checkpoint);
            } finally {
                closeCut(store);
            }
            try (JournalStore again = JournalStore.open(disk.afterCut(), file, 64L << 20)) {
                JournalDevice d = again.device("c");
                int[] seen = new int[3];
                ByteBuffer b = ByteBuffer.allocate(BLOCK);
                for (int block = 0; block < blocks; block++) {
                    d.read((long) block * BLOCK, b.array(), 0, BLOCK);
                    int v = b.getInt(0);
                    int gen = v == block * 4 + 1 ? 1 : v == block * 4 + 2 ? 2 : 0;
                    seen[gen]++;
                }
                String label = cutAt == Long.MAX_VALUE ? "no cut" : "a cut at call " + cutAt + " of the checkpoint";
                assertEquals(0, seen[0], label + ": blocks of neither generation");
                assertTrue(seen[1] == 0 || seen[2] == 0, label + ": " + seen[1] + " blocks of the last commit, "
                        + seen[2] + " of the checkpoint");
                if (cutAt == Long.MAX_VALUE) {
                    assertEquals(blocks, seen[2], "with no cut, the checkpoint's");
                }
                if (beside) {
                    assertEquals((seen[2] > 0 ? 2L : 1L) * blocks * BLOCK, d.size(), label + ": the size of its generation");
                    byte[] f = new byte[BLOCK];
                    again.device("f").read(0, f, 0, BLOCK);
                    assertArrayEquals(filled('F'), f, label + ": the flush-mode device's flushed block");
                }
            }
            return calls;
        } finally {
            deleteTree(root);
        }
    }

    /**
     * A rename of a flush-mode device is committed by a checkpoint that also drains a large
     * close-mode device: wherever the power goes, the device opens under one of its names with
     * its flushed block. (A review found intermediate commits writing a catalog that held neither
     * name: the device, and its blocks, were gone.)
     */
    @Test
    void aRenameLosesNoDeviceWhereverThePowerGoes() throws Exception {
        long calls = renameAmidADrain(Long.MAX_VALUE);
        for (long at : sample(calls, 23)) {
            renameAmidADrain(at);
        }
    }

    private long renameAmidADrain(long cutAt) throws Exception {
        Path root = Files.createTempDirectory(base(), "rename");
        int blocks = JournalStore.COMMIT_PAGES + 1024;
        try {
            Path file = Files.createDirectories(root.resolve("store")).resolve("journals.db");
            FaultyDisk disk = new FaultyDisk(RealDisk.of(null), root.resolve("graveyard"), cutAt);
            long calls;
            JournalStore store = JournalStore.open(disk, file, 64L << 20);
            try {
                JournalDevice big = store.create("big", (long) blocks * BLOCK, Durability.CLOSE);
                JournalDevice a = store.create("a", BLOCK, Durability.FLUSH);
                a.write(0, filled('A'), 0, BLOCK);
                a.flush();
                writeGeneration(big, blocks, 1);
                calls = underACut(disk, cutAt, "rename", () -> store.rename("a", "b"));
            } finally {
                closeCut(store);
            }
            try (JournalStore again = JournalStore.open(disk.afterCut(), file, 64L << 20)) {
                String label = cutAt == Long.MAX_VALUE ? "no cut" : "a cut at call " + cutAt + " of the rename";
                JournalDevice a = again.device("a");
                JournalDevice b = again.device("b");
                assertTrue(a == null ^ b == null, label + ": a=" + a + " b=" + b);
                byte[] got = new byte[BLOCK];
                (a != null ? a : b).read(0, got, 0, BLOCK);
                assertArrayEquals(filled('A'), got, label + ": its flushed block");
                if (cutAt == Long.MAX_VALUE) {
                    assertTrue(b != null, "with no cut, renamed");
                }
            }
            return calls;
        } finally {
            deleteTree(root);
        }
    }

    private static byte[] filled(int value) {
        byte[] b = new byte[BLOCK];
        java.util.Arrays.fill(b, (byte) value);
        return b;
    }

    @FunctionalInterface
    private interface StoreOp {
        void run() throws StoreException;
    }

    /**
     * Runs {@code op} with the power cut at its disk call {@code cutAt} (no cut: Long.MAX_VALUE),
     * then cuts the power anyway; the calls {@code op} made. It may fail only for the cut.
     */
    private static long underACut(FaultyDisk disk, long cutAt, String what, StoreOp op) throws IOException {
        long before = disk.calls();
        if (cutAt != Long.MAX_VALUE) {
            disk.powerCutAt(before + cutAt);
        }
        try {
            op.run();
        } catch (StoreException e) {
            assertTrue(disk.isCut(), "the " + what + " failed with no cut: " + e.getMessage());
        }
        long calls = disk.calls() - before;
        if (!disk.isCut()) {
            disk.powerCut();
        }
        return calls;
    }

    /** Closes a store whose disk lost its power (its last checkpoint fails). */
    private static void closeCut(JournalStore store) {
        try {
            store.close();
        } catch (IOException e) {
            // the disk is gone
        }
    }

    /** Every block of {@code d} written with the value {@code block * 4 + gen}, 1 MiB at a time. */
    private static void writeGeneration(JournalDevice d, int blocks, int gen) throws StoreException {
        ByteBuffer b = ByteBuffer.allocate(1 << 20);
        for (int first = 0; first < blocks; first += 256) {
            int n = Math.min(256, blocks - first);
            b.clear();
            for (int i = 0; i < n * BLOCK / 4; i++) {
                b.putInt((first + i / (BLOCK / 4)) * 4 + gen);
            }
            d.write((long) first * BLOCK, b.array(), 0, n * BLOCK);
        }
    }

    @Test
    void noFaultPointOfASeededSampleLosesAnythingFlushedOrCommitted() throws IOException {
        if (Boolean.getBoolean("vmfuse.soak")) {
            long[] seeds = new long[Integer.getInteger("vmfuse.soak.seeds", 8)];
            for (int i = 0; i < seeds.length; i++) {
                seeds[i] = i + 1;
            }
            enumerate(seeds, 0);
        } else {
            enumerate(new long[] {1, 2, 3}, 60);
        }
    }
}
