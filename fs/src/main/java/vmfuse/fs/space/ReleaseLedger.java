package vmfuse.fs.space;

import static vmfuse.fs.nativeio.Native.EIO;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.BinaryOperator;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import vmfuse.durable.Disk;
import vmfuse.durable.LogRate;
import vmfuse.durable.RealDisk;
import vmfuse.fs.FsException;
import vmfuse.fs.Node;
import vmfuse.fs.TsvField;

/**
 * Counts and logs every release of backing space: each punch, zeroed range, truncation and
 * unlink, with the bytes the backing filesystem really gave back (the drop of st_blocks).
 *
 * <p>Each image and journal device is counted under its path in the mount, without the leading
 * slash ({@link #image}: "images/tenant1/disk.raw", {@link #device}: "journals/j1"), so that no
 * image in a folder named journals is taken for a device. The counts persist in
 * STORE/releases.tsv ({@code name<TAB>bytes<TAB>events}, the name as a {@link TsvField} so that
 * a tab or newline in it splits nothing: a {@code *format*} line, one line per image or device,
 * and a {@code *total*} line), rewritten atomically by {@link #save(boolean)}, which the
 * daemon calls every few seconds while something changed (without fsync: a forced commit of the
 * backing filesystem's journal stalls the punches running beside it, measured as 1 ms spikes)
 * and, durably, at unmount. A crash can lose the counts of the last seconds; never data. A
 * ledger a crash left unreadable (a save that was not forced) is set aside as
 * releases.tsv.unreadable and the counts start again at zero: counts never keep a store from
 * mounting. A read that fails (EIO) is tried again first, up to TsvField.READ_TRIES times: a
 * passing error costs no count.
 */
public final class ReleaseLedger {
    private static final Logger log = LoggerFactory.getLogger(ReleaseLedger.class);
    /** Releases logged per second at most: a guest discards at will, and the log shares the store's disk. */
    static final int LOGGED_PER_SECOND = 100;
    private final LogRate logRate = new LogRate(LOGGED_PER_SECOND);
    static final String TOTAL = "*total*";
    /**
     * The format line's name and version. Version 1 (no such line) counted images by their bare
     * name (none was in a folder then) and devices as "journals/NAME"; it is read as version 2.
     */
    static final String FORMAT = "*format*";
    static final int VERSION = 2;

    /** The name an image is counted under: its path in the mount ("images/" and its path under images/). */
    public static String image(String path) {
        return Node.IMAGES + "/" + path;
    }

    /** The name a journal device is counted under: its path in the mount. */
    public static String device(String name) {
        return Node.JOURNALS + "/" + name;
    }

    public enum Reason {
        PUNCH_HOLE("punch-hole"), ZERO_RANGE("zero-range"), TRUNCATE("truncate"), UNLINK("unlink"),
        /** The reclaimer punched what a guest reported deleted. */
        RECLAIM("reclaim");

        final String label;

        Reason(String label) {
            this.label = label;
        }

        /** As the log line and the metrics name it. */
        public String label() {
            return label;
        }
    }

    /** Bytes released and the number of release events, for one image or in total. */
    public record Count(long bytes, long events) {
        Count plus(long moreBytes) {
            return new Count(bytes + moreBytes, events + 1);
        }
    }

    private final Disk disk;
    private final Path file;
    // guarded by this
    private final Map<String, Count> perImage = new TreeMap<>();
    private Count total = new Count(0, 0);
    private boolean dirty;
    /** Since this process started, by reason (not saved; metrics read them): per name, and in all. */
    private final Map<String, Count[]> sinceStart = new TreeMap<>();
    private final Count[] totalSinceStart = zeros();

    private ReleaseLedger(Disk disk, Path file) {
        this.disk = disk;
        this.file = file;
    }

    /** Loads the ledger kept at {@code file} on the machine's disk (tests). */
    public static ReleaseLedger load(Path file) throws FsException {
        return load(RealDisk.of(null), file);
    }

    /**
     * Loads the ledger kept at {@code file}, or starts an empty one if there is none, or if the
     * one there cannot be read (then set aside, with a warning).
     */
    public static ReleaseLedger load(Disk disk, Path file) throws FsException {
        ReleaseLedger ledger = new ReleaseLedger(disk, file);
        if (!disk.exists(file)) {
            return ledger;
        }
        try {
            return read(ledger, file);
        } catch (FsException e) {
            Path aside = file.resolveSibling(file.getFileName() + ".unreadable");
            log.warn("{}; set aside as {}, release counts start again at zero", e.getMessage(), aside);
            try {
                disk.rename(file, aside);
                disk.syncDirectory(file.toAbsolutePath().getParent());
            } catch (IOException again) {
                throw new FsException(EIO, e.getMessage() + "; cannot set it aside: "
                        + again.getMessage());
            }
            return new ReleaseLedger(disk, file);
        }
    }

    private static ReleaseLedger read(ReleaseLedger ledger, Path file) throws FsException {
        try {
            List<String> lines = TsvField.readLines(ledger.disk, file);
            if (lines.isEmpty()) { // written whole by a rename, never empty: a file truncated by something else
                throw new FsException(EIO, "corrupt release ledger " + file + ": empty");
            }
            int version = 1;
            for (String line : lines) {
                String[] f = line.split("\t");
                if (f.length != 3) {
                    throw new FsException(EIO, "corrupt release ledger " + file + ": bad line '" + line + "'");
                }
                Count c = new Count(Long.parseLong(f[1]), Long.parseLong(f[2]));
                if (f[0].equals(FORMAT)) {
                    version = (int) c.bytes();
                    if (version != VERSION) {
                        throw new FsException(EIO, "release ledger " + file + " is of format " + version + ", not "
                                + VERSION);
                    }
                } else if (f[0].equals(TOTAL)) {
                    ledger.total = c;
                } else {
                    String name = TsvField.unescape(f[0]);
                    boolean device = name.startsWith(Node.JOURNALS + "/");
                    ledger.perImage.put(version == 1 && !device ? image(name) : name, c);
                }
            }
        } catch (IOException | NumberFormatException e) {
            throw new FsException(EIO, "cannot read release ledger " + file + ": " + e);
        }
        return ledger;
    }

    /** Records one release and logs it: image, offset, length asked, bytes really freed, reason. */
    public void record(String image, long offset, long length, long freed, Reason reason) {
        // a device's freed bytes are a drop of what it stores, which another handle's writes can
        // outrun: never a negative release (the counts, and the metrics' counters, only grow)
        freed = Math.max(0, freed);
        synchronized (this) {
            perImage.merge(image, new Count(freed, 1), (a, b) -> a.plus(b.bytes()));
            total = total.plus(freed);
            dirty = true;
            Count[] mine = sinceStart.computeIfAbsent(image, n -> zeros());
            mine[reason.ordinal()] = mine[reason.ordinal()].plus(freed);
            totalSinceStart[reason.ordinal()] = totalSinceStart[reason.ordinal()].plus(freed);
        }
        if (logRate.allow(n -> log.info("release: {} more releases in the last second not logged (they are counted)",
                n))) {
            log.info("release image={} offset={} length={} freed={} reason={}", TsvField.escape(image), offset, length,
                    freed, reason.label);
        }
    }

    /** Carries an image's counts over to its new name, or a folder's images' to the folder's new name. */
    public synchronized void renamed(String from, String to) {
        if (move(perImage, from, to, ReleaseLedger::sum)) {
            dirty = true;
        }
        move(sinceStart, from, to, (a, b) -> {
            for (int i = 0; i < a.length; i++) {
                a[i] = sum(a[i], b[i]);
            }
            return a;
        });
    }

    /**
     * Moves the entries of {@code from} (an image, or a folder and what it holds) under {@code to},
     * merged with what is there already; whether any moved.
     */
    private static <V> boolean move(Map<String, V> counts, String from, String to, BinaryOperator<V> merge) {
        boolean moved = false;
        for (String name : List.copyOf(counts.keySet())) {
            if (name.equals(from) || name.startsWith(from + "/")) {
                V c = counts.remove(name);
                counts.merge(to + name.substring(from.length()), c, merge);
                moved = true;
            }
        }
        return moved;
    }

    /** Forgets an image's own line once it is gone; its releases stay in the total. */
    public synchronized void forget(String image) {
        if (perImage.remove(image) != null) {
            dirty = true;
        }
        sinceStart.remove(image);
    }

    /**
     * What each image and device (still there) released since this process started, by reason
     * (the array's index is the {@link Reason}'s ordinal), by its name in the mount.
     */
    public synchronized Map<String, Count[]> sinceStartByName() {
        Map<String, Count[]> out = new TreeMap<>();
        sinceStart.forEach((name, counts) -> out.put(name, counts.clone()));
        return out;
    }

    /** What every image and device (gone ones too) released since this process started, by reason. */
    public synchronized Count[] totalSinceStart() {
        return totalSinceStart.clone();
    }

    private static Count[] zeros() {
        Count[] c = new Count[Reason.values().length];
        java.util.Arrays.fill(c, new Count(0, 0));
        return c;
    }

    private static Count sum(Count a, Count b) {
        return new Count(a.bytes() + b.bytes(), a.events() + b.events());
    }

    public synchronized Count of(String image) {
        return perImage.getOrDefault(image, new Count(0, 0));
    }

    public synchronized Count total() {
        return total;
    }

    /**
     * Writes the ledger if it changed: a temporary file renamed over the old one, so a reader or
     * a reader sees the old counts or the new, never a mix; {@code durable} forces it and its
     * directory (a crash then keeps it whole; see Disk.replace for what it may do otherwise).
     */
    public void save(boolean durable) throws IOException {
        StringBuilder out = new StringBuilder();
        synchronized (this) {
            if (!dirty) {
                return;
            }
            out.append(FORMAT).append('\t').append(VERSION).append("\t0\n");
            perImage.forEach((name, c) -> out.append(TsvField.escape(name)).append('\t').append(c.bytes()).append('\t')
                    .append(c.events()).append('\n'));
            out.append(TOTAL).append('\t').append(total.bytes()).append('\t').append(total.events()).append('\n');
            dirty = false;
        }
        try {
            disk.replace(file, out.toString().getBytes(StandardCharsets.UTF_8), durable);
        } catch (IOException e) {
            synchronized (this) {
                dirty = true;
            }
            throw e;
        }
    }
}
