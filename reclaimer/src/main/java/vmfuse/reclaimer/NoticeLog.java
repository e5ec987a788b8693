package vmfuse.reclaimer;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import vmfuse.durable.Disk;
import vmfuse.durable.DiskFile;

/*
 * The durable log of one VM's acknowledged deletion notices (STORE/reclaim/VM.notices). A notice
 * is acknowledged to the agent only once its line is on disk; it leaves the log when carried out.
 * Every append is forced (fdatasync) before it returns.
 *
 *   S <last seq>                         first line after a compaction
 *   N <seq> <token> <size> <ranges>      a notice acknowledged (ranges: what admission left)
 *   X <seq> <ranges>                     a write cut these ranges out of the notice
 *   D <seq>                              the notice was carried out
 *   C <identity>                         the daemon stopped watching the image's writes, cleanly,
 *                                        with the image as identity says (ImageIdentity)
 *
 * A crash can tear only the last line, which is then ignored. Anything else unreadable refuses
 * the log with its line number, and the file is left as it is.
 *
 * Notices restored at open are kept only if the image was watched without a gap since they came:
 * the log must end with a C record (a clean stop, after which nothing was written through the
 * mount unwatched: the daemon was not serving) whose identity is the image's now (nothing wrote
 * to it, or replaced it, meanwhile). Otherwise they are dropped, never carried out: a write nobody
 * tracked may have reused their ranges (a VM that failed to start ran anyway, an image restored
 * from a backup, a daemon killed).
 *
 * An append that fails (a full disk can write part of a line; a failed fdatasync leaves unknown
 * what reached the disk, and a later one that returns 0 does not say it did) is never followed by
 * another append to the same file: the log is rewritten from memory (a new file, forced, renamed
 * over it, the directory synced), and the change it carried stands if that works. If the rewrite
 * fails too, the change fails, and every later one first tries the rewrite again.
 */
final class NoticeLog implements AutoCloseable {
    /** A notice waiting in the log, with what is left of its ranges. */
    record Pending(long seq, long token, long fileSize, ByteRanges ranges) {}

    private final Disk disk;
    private final Path file;
    private DiskFile ch;
    /** Where the next line goes: the end of the last whole line written. */
    private long end;
    /** The file's size after the last compaction: what waits, written out whole. */
    private long compacted;
    /** An append failed and the rewrite that would repair the file did too: the file is not to be appended to. */
    private boolean broken;
    /** The identity of the C record that ended the log when it was loaded; null if it did not end with one. */
    private String closedAs;
    /** Notices dropped at open: the image was not watched without a gap since they came. */
    private final List<Pending> dropped = new ArrayList<>();
    private long lastSeq;
    private final Map<Long, Pending> pending = new TreeMap<>();
    /** The ranges the pending notices hold, each its own (not merged across notices). */
    private long rangesHeld;

    private NoticeLog(Disk disk, Path file) {
        this.disk = disk;
        this.file = file;
    }

    /** Opens (or creates) the log on {@code disk}, reads what waits in it, and compacts it to that. */
    static NoticeLog open(Disk disk, Path file) throws IOException {
        return open(disk, file, null);
    }

    /**
     * As {@link #open(Disk, Path)}; with {@code identity} (the image's now), what waits is kept only
     * if the log ended with a clean stop at that identity, and dropped otherwise ({@link #dropped}).
     */
    static NoticeLog open(Disk disk, Path file, String identity) throws IOException {
        NoticeLog l = new NoticeLog(disk, file);
        if (disk.exists(file)) {
            l.load();
        }
        if (identity != null && !identity.equals(l.closedAs)) {
            l.pending.values().removeIf(p -> p.ranges().isEmpty());
            l.dropped.addAll(l.pending.values());
            l.pending.clear();
        }
        l.compact();
        return l;
    }

    /** The identity the log's closing C record gave, or null. */
    String closedAs() {
        return closedAs;
    }

    /** The notices {@link #open} dropped. */
    List<Pending> dropped() {
        return dropped;
    }

    /** Records a clean stop of watching the image, which is {@code identity} now. */
    void closed(String identity) throws IOException {
        append("C " + identity);
    }

    private void load() throws IOException {
        String text = new String(disk.readAll(file), StandardCharsets.US_ASCII);
        String[] lines = text.split("\n", -1);
        int complete = lines.length - 1; // the last is "" after a newline, or a line a crash tore
        for (int i = 0; i < complete; i++) {
            String[] f = lines[i].split(" ", -1); // -1: an N record's ranges may be empty
            closedAs = null; // a C record counts only as the last
            try {
                switch (f[0]) {
                    case "C" -> closedAs = f[1];
                    case "S" -> lastSeq = Math.max(lastSeq, Notice.number(f[1], "seq"));
                    case "N" -> {
                        long seq = Notice.number(f[1], "seq");
                        pending.put(seq, new Pending(seq, Notice.number(f[2], "token"), Notice.number(f[3], "size"),
                                ranges(f[4])));
                        lastSeq = Math.max(lastSeq, seq);
                    }
                    case "X" -> {
                        Pending p = pending.get(Notice.number(f[1], "seq"));
                        if (p != null) {
                            for (Range r : ranges(f[2]).list()) {
                                p.ranges().remove(r.offset(), r.end());
                            }
                        }
                    }
                    case "D" -> pending.remove(Notice.number(f[1], "seq"));
                    default -> throw new ProtocolException("malformed", "unknown record '" + f[0] + "'");
                }
            } catch (ProtocolException | ArrayIndexOutOfBoundsException e) {
                throw new IOException("notice log " + file + " line " + (i + 1) + " is corrupt: " + lines[i]);
            }
        }
    }

    private static ByteRanges ranges(String s) throws ProtocolException {
        ByteRanges r = new ByteRanges();
        if (s.isEmpty()) {
            return r;
        }
        for (String p : s.split(",")) {
            int colon = p.indexOf(':');
            if (colon < 0) {
                throw new ProtocolException("malformed", p);
            }
            long off = Notice.number(p.substring(0, colon), "offset");
            r.add(off, off + Notice.number(p.substring(colon + 1), "length"));
        }
        return r;
    }

    /** Rewrites the log as what waits in it (a new file, forced, renamed over the old one). */
    private void compact() throws IOException {
        StringBuilder b = new StringBuilder("S ").append(lastSeq).append('\n');
        pending.values().removeIf(p -> p.ranges().isEmpty());
        rangesHeld = 0;
        for (Pending p : pending.values()) {
            rangesHeld += p.ranges().count();
            b.append("N ").append(p.seq()).append(' ').append(p.token()).append(' ').append(p.fileSize()).append(' ')
                    .append(Notice.format(p.ranges().list())).append('\n');
        }
        byte[] text = b.toString().getBytes(StandardCharsets.US_ASCII);
        if (ch != null) {
            ch.close();
            ch = null;
        }
        disk.replace(file, text);
        ch = disk.open(file, false);
        end = text.length;
        compacted = text.length;
        broken = false;
    }

    /**
     * The log's bound: past max(COMPACT_AT, 4x what waits), it is rewritten as what waits. So a
     * guest whose notices never all go (one kept waiting, a flood of notices its writes empty,
     * notices carried out one by one beside it) cannot grow its log without end.
     */
    static final long COMPACT_AT = 1 << 20;

    /**
     * Housekeeping after a change already on disk: if the rewrite fails, the change still stands,
     * and the next append tries the rewrite first (as after a failed append).
     */
    private void compactIfLarge() {
        if (end > Math.max(COMPACT_AT, 4 * compacted)) {
            try {
                compact();
            } catch (IOException e) {
                broken = true;
            }
        }
    }

    /**
     * Appends a line, forced; if that fails, rewrites the log from memory (which the caller has
     * already changed): the change stands if the rewrite works, else this throws.
     */
    private void append(String line) throws IOException {
        if (broken) {
            compact(); // throws while the disk still refuses: the change fails
        }
        byte[] b = (line + "\n").getBytes(StandardCharsets.US_ASCII);
        try {
            ch.writeFully(ByteBuffer.wrap(b), end);
            ch.force(false);
            end += b.length;
        } catch (IOException e) {
            try {
                compact();
            } catch (IOException again) {
                broken = true;
                e.addSuppressed(again);
                throw new IOException("notice log " + file + ": cannot append (" + e.getMessage()
                        + ") nor rewrite it (" + again.getMessage() + ")", e);
            }
        }
    }

    long lastSeq() {
        return lastSeq;
    }

    /** The ranges the pending notices hold between them (a range two notices hold counts twice). */
    long rangesHeld() {
        return rangesHeld;
    }

    /** What waits, oldest first. */
    List<Pending> pending() {
        return new ArrayList<>(pending.values());
    }

    void accepted(Notice n, List<Range> ranges) throws IOException {
        long before = lastSeq;
        lastSeq = Math.max(lastSeq, n.seq());
        Pending added = ranges.isEmpty() ? null : new Pending(n.seq(), n.token(), n.fileSize(), ByteRanges.of(ranges));
        if (added != null) {
            pending.put(n.seq(), added);
            rangesHeld += added.ranges().count();
        }
        try {
            append("N " + n.seq() + " " + n.token() + " " + n.fileSize() + " " + Notice.format(ranges));
        } catch (IOException e) {
            if (added != null && pending.remove(n.seq()) != null) { // not acknowledged: the agent sends it again
                rangesHeld -= added.ranges().count();
            }
            lastSeq = before;
            throw e;
        }
        compactIfLarge();
    }

    /** A write landed on pending ranges: cut them out of every notice that holds them. */
    void cut(List<Range> written) throws IOException {
        for (Pending p : pending.values()) {
            List<Range> gone = new ArrayList<>();
            int held = p.ranges().count();
            for (Range w : written) {
                gone.addAll(p.ranges().remove(w.offset(), w.end()));
            }
            rangesHeld += p.ranges().count() - held;
            if (!gone.isEmpty()) {
                append("X " + p.seq() + " " + Notice.format(gone));
            }
        }
        compactIfLarge();
    }

    void done(long seq) throws IOException {
        Pending p = pending.remove(seq);
        if (p != null) {
            rangesHeld -= p.ranges().count();
            append("D " + seq);
        }
        compactIfLarge();
    }

    @Override
    public void close() throws IOException {
        if (ch != null) {
            ch.close();
        }
    }
}
