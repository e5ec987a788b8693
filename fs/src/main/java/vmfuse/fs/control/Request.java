package vmfuse.fs.control;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import vmfuse.fs.FsException;
import vmfuse.fs.TsvField;
import vmfuse.fs.nativeio.Native;

/**
 * A request on the control socket (STORE/vmfuse.sock): one line, its fields separated by tabs,
 * the first naming it. Both ends use these records: the command line encodes, the daemon
 * decodes; what each answers is in {@link Answer}.
 *
 * <pre>
 *   status                                          the mount, the store's space, images, VMs
 *   journals                                        journal devices and the journal store
 *   journal-create NAME SIZE DURABILITY             ok
 *   journal-checkpoint                              journal-store (after it)
 *   journal-reopen                                  journal-reopened, journal-store (after it)
 *   vm-add NAME IMAGE AGENT-SOCKET QMP|- [ACCESS]   ok    (ACCESS: USER or USER:GROUP)
 *   vm-remove NAME                                  ok
 *   vm-reclaim NAME                                 reclaimed
 *   export-add NAME UID|- PSK|- WEIGHT RES LIMIT VOLUME...  ok    (VOLUME: images/PATH or journals/NAME)
 *   export-set NAME WEIGHT|- RES|- LIMIT|-          export
 *   export-remove NAME                              ok
 * </pre>
 * A field may not hold a tab, newline or carriage return (names given on the command line are
 * checked before they are sent): no escaping on the way in.
 */
public sealed interface Request {
    /** The request's fields, the first its name. */
    List<String> fields();

    /** The request as one line, without its newline; EINVAL if a field would split it. */
    default String encode() throws FsException {
        for (String f : fields()) {
            if (TsvField.splits(f)) {
                throw new FsException(Native.EINVAL, "'" + TsvField.escape(f)
                        + "' holds a tab, newline or carriage return; names given to vmfuse may not");
            }
        }
        return String.join("\t", fields());
    }

    record Status() implements Request {
        public List<String> fields() {
            return List.of("status");
        }
    }

    record Journals() implements Request {
        public List<String> fields() {
            return List.of("journals");
        }
    }

    /** Commit every journal device's blocks in memory to the store now. */
    record JournalCheckpoint() implements Request {
        public List<String> fields() {
            return List.of("journal-checkpoint");
        }
    }

    /** Open the journal store's files again in place (after a failure broke it). */
    record JournalReopen() implements Request {
        public List<String> fields() {
            return List.of("journal-reopen");
        }
    }

    /** SIZE as typed (K, M, G suffixes), DURABILITY flush or close. */
    record JournalCreate(String name, String size, String durability) implements Request {
        public List<String> fields() {
            return List.of("journal-create", name, size, durability);
        }
    }

    /** {@code qmpSocket} null: none (a raw image); {@code access} null: root's. */
    record VmAdd(String name, String image, String agentSocket, String qmpSocket, String access) implements Request {
        public List<String> fields() {
            List<String> f = new ArrayList<>(List.of("vm-add", name, image, agentSocket, qmpSocket == null ? "-" : qmpSocket));
            if (access != null) {
                f.add(access);
            }
            return f;
        }
    }

    record VmRemove(String name) implements Request {
        public List<String> fields() {
            return List.of("vm-remove", name);
        }
    }

    record VmReclaim(String name) implements Request {
        public List<String> fields() {
            return List.of("vm-reclaim", name);
        }
    }

    /**
     * An NBD export: {@code uid} its clients run as (null: none), {@code pskIdentity} of their TLS
     * key (null: none); reservation and limit in IOPS, 0 for none.
     */
    record ExportAdd(String name, Long uid, String pskIdentity, int weight, long reservationIops, long limitIops,
            List<String> volumes) implements Request {
        public ExportAdd {
            volumes = List.copyOf(volumes);
        }

        public List<String> fields() {
            List<String> f = new ArrayList<>(List.of("export-add", name, uid == null ? "-" : "" + uid,
                    pskIdentity == null ? "-" : pskIdentity, "" + weight, "" + reservationIops, "" + limitIops));
            f.addAll(volumes);
            return f;
        }
    }

    /** New controls for an export; a null one stays as it is. */
    record ExportSet(String name, Integer weight, Long reservationIops, Long limitIops) implements Request {
        public List<String> fields() {
            return List.of("export-set", name, weight == null ? "-" : "" + weight,
                    reservationIops == null ? "-" : "" + reservationIops, limitIops == null ? "-" : "" + limitIops);
        }
    }

    record ExportRemove(String name) implements Request {
        public List<String> fields() {
            return List.of("export-remove", name);
        }
    }

    /** The request a line holds; EINVAL, naming what is wrong, if it holds none. */
    static Request decode(String line) throws FsException {
        String[] f = line.split("\t", -1);
        String[] a = Arrays.copyOfRange(f, 1, f.length);
        return switch (f[0]) {
            case "status" -> {
                arity(f[0], a, 0, 0, "");
                yield new Status();
            }
            case "journals" -> {
                arity(f[0], a, 0, 0, "");
                yield new Journals();
            }
            case "journal-checkpoint" -> {
                arity(f[0], a, 0, 0, "");
                yield new JournalCheckpoint();
            }
            case "journal-reopen" -> {
                arity(f[0], a, 0, 0, "");
                yield new JournalReopen();
            }
            case "journal-create" -> {
                arity(f[0], a, 3, 3, "NAME SIZE DURABILITY");
                yield new JournalCreate(a[0], a[1], a[2]);
            }
            case "vm-add" -> {
                arity(f[0], a, 4, 5, "NAME IMAGE AGENT-SOCKET QMP-SOCKET|- [USER[:GROUP]]");
                yield new VmAdd(a[0], a[1], a[2], a[3].equals("-") ? null : a[3], a.length == 5 ? a[4] : null);
            }
            case "vm-remove" -> {
                arity(f[0], a, 1, 1, "NAME");
                yield new VmRemove(a[0]);
            }
            case "vm-reclaim" -> {
                arity(f[0], a, 1, 1, "NAME");
                yield new VmReclaim(a[0]);
            }
            case "export-add" -> {
                arity(f[0], a, 7, 6 + 64, "NAME UID|- PSK-IDENTITY|- WEIGHT RESERVATION LIMIT VOLUME...");
                yield new ExportAdd(a[0], a[1].equals("-") ? null : number(a[1]), a[2].equals("-") ? null : a[2],
                        weight(a[3]), number(a[4]), number(a[5]), Arrays.asList(a).subList(6, a.length));
            }
            case "export-set" -> {
                arity(f[0], a, 4, 4, "NAME WEIGHT|- RESERVATION|- LIMIT|-");
                yield new ExportSet(a[0], a[1].equals("-") ? null : weight(a[1]),
                        a[2].equals("-") ? null : number(a[2]), a[3].equals("-") ? null : number(a[3]));
            }
            case "export-remove" -> {
                arity(f[0], a, 1, 1, "NAME");
                yield new ExportRemove(a[0]);
            }
            default -> throw new FsException(Native.EINVAL, "unknown request '" + TsvField.escape(f[0]) + "'");
        };
    }

    private static int weight(String s) throws FsException {
        long n = number(s);
        if (n > Integer.MAX_VALUE) {
            throw new FsException(Native.EINVAL, "weight " + n + " is not in 1..1000");
        }
        return (int) n;
    }

    private static long number(String s) throws FsException {
        try {
            long n = Long.parseLong(s);
            if (n < 0 || n > Integer.MAX_VALUE * 4L) {
                throw new NumberFormatException();
            }
            return n;
        } catch (NumberFormatException e) {
            throw new FsException(Native.EINVAL, "'" + TsvField.escape(s) + "' is not a number");
        }
    }

    private static void arity(String name, String[] args, int min, int max, String usage) throws FsException {
        if (args.length < min || args.length > max) {
            throw new FsException(Native.EINVAL, name + " takes " + (usage.isEmpty() ? "nothing" : usage));
        }
        for (String s : args) {
            if (s.isEmpty()) {
                throw new FsException(Native.EINVAL, name + " takes " + usage + ": a field is empty");
            }
        }
    }
}
