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
 *
 * A crash can tear only the last line, which is then ignored. Anything else unreadable refuses
 * the log with its line number, and the file is left as it is.
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
    /** An append failed and the rewrite that would repair the file did too: the file is not to be appended to. */
    private boolean broken;
    private long lastSeq;
    private final Map<Long, Pending> pending = new TreeMap<>();

    private NoticeLog(Disk disk, Path file) {
        this.disk = disk;
        this.file = file;
    }

    /** Opens (or creates) the log on {@code disk}, reads what waits in it, and compacts it to that. */
    static NoticeLog open(Disk disk, Path file) throws IOException {
        NoticeLog l = new NoticeLog(disk, file);
        if (disk.exists(file)) {
            l.load();
        }
        l.compact();
        return l;
    }

    private void load() throws IOException {
        String text = new String(disk.readAll(file), StandardCharsets.US_ASCII);
        String[] lines = text.split("\n", -1);
        int complete = lines.length - 1; // the last is "" after a newline, or a line a crash tore
        for (int i = 0; i < complete; i++) {
            String[] f = lines[i].split(" ");
            try {
                switch (f[0]) {
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
                            for (long[] r : ranges(f[2]).list()) {
                                p.ranges().remove(r[0], r[0] + r[1]);
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
        for (Pending p : pending.values()) {
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
        broken = false;
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

    /** What waits, oldest first. */
    List<Pending> pending() {
        return new ArrayList<>(pending.values());
    }

    void accepted(Notice n, List<long[]> ranges) throws IOException {
        long before = lastSeq;
        lastSeq = Math.max(lastSeq, n.seq());
        if (!ranges.isEmpty()) {
            pending.put(n.seq(), new Pending(n.seq(), n.token(), n.fileSize(), ByteRanges.of(ranges)));
        }
        try {
            append("N " + n.seq() + " " + n.token() + " " + n.fileSize() + " " + Notice.format(ranges));
        } catch (IOException e) {
            pending.remove(n.seq()); // not acknowledged: the agent sends it again
            lastSeq = before;
            throw e;
        }
    }

    /** A write landed on pending ranges: cut them out of every notice that holds them. */
    void cut(List<long[]> written) throws IOException {
        for (Pending p : pending.values()) {
            List<long[]> gone = new ArrayList<>();
            for (long[] w : written) {
                gone.addAll(p.ranges().remove(w[0], w[0] + w[1]));
            }
            if (!gone.isEmpty()) {
                append("X " + p.seq() + " " + Notice.format(gone));
            }
        }
    }

    void done(long seq) throws IOException {
        if (pending.remove(seq) != null) {
            append("D " + seq);
        }
        if (pending.isEmpty() && end > (1 << 20)) {
            compact();
        }
    }

    @Override
    public void close() throws IOException {
        if (ch != null) {
            ch.close();
        }
    }
}
