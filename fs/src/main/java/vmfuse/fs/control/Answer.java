package vmfuse.fs.control;

import java.util.ArrayList;
import java.util.List;

import vmfuse.fs.FsException;
import vmfuse.fs.TsvField;
import vmfuse.fs.nativeio.Native;

/**
 * What the daemon answers a {@link Request}: lines, each a tag then tab-separated fields, a name
 * in its {@link TsvField} form; the records below hold them decoded (names as they are). A
 * request that fails is answered with one line, {@code error ERRNO REASON}, which the command
 * line turns back into the {@link FsException} the daemon met.
 *
 * <pre>
 *   status         mount, store, image..., total, vm-failed..., vm..., export..., nbd...
 *   journals       journal..., journal-store
 *   vm-reclaim     reclaimed
 *   the others     ok
 * </pre>
 */
public sealed interface Answer {
    /** The line's tag and fields, as they go on the wire. */
    List<String> fields();

    default String encode() {
        return String.join("\t", fields());
    }

    /** The mount point, the daemon's pid and the store's directory. */
    record Mount(String mountPoint, long pid, String store) implements Answer {
        public List<String> fields() {
            return List.of("mount", TsvField.escape(mountPoint), "" + pid, TsvField.escape(store));
        }
    }

    /** The space of the filesystem that holds the store's images, in bytes. */
    record StoreSpace(long total, long free) implements Answer {
        public List<String> fields() {
            return List.of("store", "" + total, "" + free);
        }
    }

    /** An image: its size, bytes allocated in the store, bytes released and release events, open handles. */
    record Image(String name, long size, long allocated, long released, long releases, int open) implements Answer {
        public List<String> fields() {
            return List.of("image", TsvField.escape(name), "" + size, "" + allocated, "" + released, "" + releases,
                    "" + open);
        }
    }

    /** The sums over every image. */
    record Total(int images, long size, long allocated, long released, long releases) implements Answer {
        public List<String> fields() {
            return List.of("total", "" + images, "" + size, "" + allocated, "" + released, "" + releases);
        }
    }

    /**
     * A VM the reclaimer serves: notices acknowledged and refused; bytes waiting, punched, freed;
     * bytes not punched by reason (partial blocks, written after the fence or while waiting, not
     * the image's own, dropped); the threshold of waiting bytes that starts a carry-out.
     */
    record Vm(String name, String image, String agentSocket, long notices, long refused, long pending, long punched,
            long freed, long skippedPartial, long skippedWrittenAfterFence, long skippedWrittenWhilePending,
            double threshold, long skippedNotOwned, long dropped) implements Answer {
        public List<String> fields() {
            return List.of("vm", TsvField.escape(name), TsvField.escape(image), TsvField.escape(agentSocket),
                    "" + notices, "" + refused, "" + pending, "" + punched, "" + freed, "" + skippedPartial,
                    "" + skippedWrittenAfterFence, "" + skippedWrittenWhilePending, String.format(java.util.Locale.ROOT, "%.4f", threshold),
                    "" + skippedNotOwned, "" + dropped);
        }
    }

    /** A VM registered that could not start, and why. */
    record VmFailed(String name, String image, String reason) implements Answer {
        public List<String> fields() {
            return List.of("vm-failed", TsvField.escape(name), TsvField.escape(image), TsvField.escape(reason));
        }
    }

    /** A journal device: size, bytes stored, memory used, durability, last flush (ms since the epoch, 0: never). */
    record Journal(String name, long size, long stored, long memory, String durability, long lastFlush)
            implements Answer {
        public List<String> fields() {
            return List.of("journal", TsvField.escape(name), "" + size, "" + stored, "" + memory, durability,
                    "" + lastFlush);
        }
    }

    /**
     * The journal store: blocks held in memory and its bound, bytes on disk, checkpoints, memory
     * allocated, times it was opened again in place, and why it takes no commits (null: it does).
     */
    record JournalStore(long memoryHeld, long memoryLimit, long bytesOnDisk, long checkpoints, long memoryAllocated,
            long reopens, String broken) implements Answer {
        public List<String> fields() {
            return List.of("journal-store", "" + memoryHeld, "" + memoryLimit, "" + bytesOnDisk, "" + checkpoints,
                    "" + memoryAllocated, "" + reopens, broken == null ? "-" : TsvField.escape(broken));
        }
    }

    /** A reopen of the journal store: close-mode devices that lost their changes since their last checkpoint. */
    record JournalReopened(long lostDevices) implements Answer {
        public List<String> fields() {
            return List.of("journal-reopened", "" + lostDevices);
        }
    }

    /** What `vm reclaim` did: bytes punched and freed, bytes still waiting, bytes of notices dropped. */
    record Reclaimed(long punched, long freed, long pending, long dropped) implements Answer {
        public List<String> fields() {
            return List.of("reclaimed", "" + punched, "" + freed, "" + pending, "" + dropped);
        }
    }

    /**
     * An NBD export (vmfuse export add): its clients' uid (-1: none) and TLS key identity (null:
     * none), its scheduler controls, its volumes.
     */
    record Export(String name, long uid, String pskIdentity, int weight, long reservationIops, long limitIops,
            List<String> volumes) implements Answer {
        public Export {
            volumes = List.copyOf(volumes);
        }

        public List<String> fields() {
            List<String> f = new ArrayList<>(List.of("export", TsvField.escape(name), "" + uid,
                    pskIdentity == null ? "-" : TsvField.escape(pskIdentity), "" + weight, "" + reservationIops,
                    "" + limitIops));
            volumes.forEach(v -> f.add(TsvField.escape(v)));
            return f;
        }
    }

    /**
     * A share of the NBD door's scheduler (an export, or a volume root opened outside any): its
     * controls, clients connected, requests waiting now, requests done and bytes moved by kind
     * (read, write, flush, trim), and latency from arrival to done (p50, p99, microseconds, as the
     * upper bound of a power-of-two bucket).
     */
    record NbdShare(String name, int weight, long reservationIops, long limitIops, int clients, int queued,
            long reads, long writes, long flushes, long trims, long bytesRead, long bytesWritten, long p50Micros,
            long p99Micros) implements Answer {
        public List<String> fields() {
            return List.of("nbd", TsvField.escape(name), "" + weight, "" + reservationIops, "" + limitIops,
                    "" + clients, "" + queued, "" + reads, "" + writes, "" + flushes, "" + trims, "" + bytesRead,
                    "" + bytesWritten, "" + p50Micros, "" + p99Micros);
        }
    }

    /** Done. */
    record Ok() implements Answer {
        public List<String> fields() {
            return List.of("ok");
        }
    }

    /** The answer to a request that failed. */
    static String error(FsException e) {
        return "error " + e.errno() + " " + e.getMessage().replace('\n', ' ');
    }

    /** Every line of an answer, as text (each line ends with a newline). */
    static String encode(List<? extends Answer> lines) {
        StringBuilder b = new StringBuilder();
        for (Answer a : lines) {
            b.append(a.encode()).append('\n');
        }
        return b.toString();
    }

    /**
     * The lines of an answer; the FsException it carries if it is an error (from a daemon of an
     * earlier version, "error REASON": EINVAL); EIO naming the line if one is not understood.
     */
    static List<Answer> decode(String text) throws FsException {
        if (text.startsWith("error ")) {
            String rest = text.substring("error ".length()).trim();
            int space = rest.indexOf(' ');
            if (space > 0 && rest.substring(0, space).chars().allMatch(Character::isDigit)) {
                throw new FsException(Integer.parseInt(rest.substring(0, space)), rest.substring(space + 1));
            }
            throw new FsException(Native.EINVAL, rest);
        }
        List<Answer> out = new ArrayList<>();
        for (String line : text.split("\n")) {
            if (!line.isEmpty()) {
                out.add(decodeLine(line));
            }
        }
        return out;
    }

    private static Answer decodeLine(String line) throws FsException {
        String[] f = line.split("\t", -1);
        try {
            return switch (f[0].startsWith("ok ") ? "ok" : f[0]) {
                case "mount" -> new Mount(name(f, 1, 4), num(f[2]), TsvField.unescape(f[3]));
                case "store" -> new StoreSpace(num(f[1]), num(f[2]));
                case "image" -> new Image(name(f, 1, 7), num(f[2]), num(f[3]), num(f[4]), num(f[5]), (int) num(f[6]));
                case "total" -> new Total((int) num(f[1]), num(f[2]), num(f[3]), num(f[4]), num(f[5]));
                case "vm" -> new Vm(name(f, 1, 15), TsvField.unescape(f[2]), TsvField.unescape(f[3]), num(f[4]),
                        num(f[5]), num(f[6]), num(f[7]), num(f[8]), num(f[9]), num(f[10]), num(f[11]),
                        Double.parseDouble(f[12]), num(f[13]), num(f[14]));
                case "vm-failed" -> new VmFailed(name(f, 1, 4), TsvField.unescape(f[2]), TsvField.unescape(f[3]));
                case "journal" -> new Journal(name(f, 1, 7), num(f[2]), num(f[3]), num(f[4]), f[5], num(f[6]));
                case "journal-store" -> new JournalStore(num(f[1]), num(f[2]), num(f[3]), num(f[4]), num(f[5]),
                        f.length > 7 ? num(f[6]) : 0, f.length > 7 && !f[7].equals("-") ? TsvField.unescape(f[7]) : null);
                case "journal-reopened" -> new JournalReopened(num(f[1]));
                case "reclaimed" -> new Reclaimed(num(f[1]), num(f[2]), num(f[3]), num(f[4]));
                case "export" -> {
                    if (f.length < 8) {
                        throw new IllegalArgumentException("an export of no volume");
                    }
                    List<String> volumes = new ArrayList<>();
                    for (int i = 7; i < f.length; i++) {
                        volumes.add(TsvField.unescape(f[i]));
                    }
                    yield new Export(TsvField.unescape(f[1]), num(f[2]), f[3].equals("-") ? null
                            : TsvField.unescape(f[3]), (int) num(f[4]), num(f[5]), num(f[6]), volumes);
                }
                case "nbd" -> new NbdShare(name(f, 1, 15), (int) num(f[2]), num(f[3]), num(f[4]), (int) num(f[5]),
                        (int) num(f[6]), num(f[7]), num(f[8]), num(f[9]), num(f[10]), num(f[11]), num(f[12]),
                        num(f[13]), num(f[14]));
                case "ok" -> legacy(line);
                default -> throw new IllegalArgumentException("unknown line");
            };
        } catch (RuntimeException e) {
            throw new FsException(Native.EIO, "the daemon answered a line this vmfuse does not understand ("
                    + e.getMessage() + "): " + line);
        }
    }

    /** "ok", or the "ok PUNCHED FREED PENDING" of a daemon of an earlier version to vm-reclaim. */
    private static Answer legacy(String line) {
        String[] f = line.split(" ");
        if (f.length == 1) {
            return new Ok();
        }
        return new Reclaimed(num(f[1]), num(f[2]), num(f[3]), f.length > 4 ? num(f[4]) : 0);
    }

    /** Field {@code i}, a name, once the line is known to have {@code n} fields. */
    private static String name(String[] f, int i, int n) {
        if (f.length != n) {
            throw new IllegalArgumentException(n + " fields expected, not " + f.length);
        }
        return TsvField.unescape(f[i]);
    }

    private static long num(String s) {
        return Long.parseLong(s);
    }
}
