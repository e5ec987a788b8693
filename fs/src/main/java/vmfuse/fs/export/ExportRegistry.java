package vmfuse.fs.export;

import static vmfuse.fs.nativeio.Native.*;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileSystems;
import java.nio.file.Path;
import java.nio.file.attribute.UserPrincipal;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import vmfuse.durable.Disk;
import vmfuse.fs.FsException;
import vmfuse.fs.Node;
import vmfuse.fs.TsvField;
import vmfuse.fs.nativeio.Native;
import vmfuse.nbd.Scheduler;

/*
 * The NBD door's tenants (vmfuse export add/set/remove): each export is a name, who its clients
 * are (the uid they run as on the unix socket, the identity of their pre-shared key over TCP with
 * TLS, or both), the scheduler's controls for its requests, and the volumes it holds (paths in the
 * mount: "images/tenant1/vm7/disk.raw", "journals/vm7"). Such a client sees and opens those
 * volumes and nothing else; root on the unix socket (the operator) sees them all; a volume belongs
 * to one export at most, and its requests are counted in that export's share of the scheduler.
 *
 * Kept in STORE/exports.tsv, replaced whole at each change, one line per export:
 *   NAME TAB UID|- TAB PSK-IDENTITY|- TAB WEIGHT TAB RESERVATION-IOPS TAB LIMIT-IOPS TAB VOLUME [TAB VOLUME...]
 * names, identities and volumes in their TsvField form.
 */
public final class ExportRegistry {
    private static final Logger log = LoggerFactory.getLogger(ExportRegistry.class);
    /** Volumes one export may hold. */
    public static final int MAX_VOLUMES = 64;
    public static final long MAX_UID = 0xffff_fffeL;

    /** An export: its clients' uid (-1: none) and key identity (null: none), its controls, its volumes. */
    public record Grant(String name, long uid, String pskIdentity, Scheduler.Qos qos, List<String> volumes) {
        public Grant {
            volumes = List.copyOf(volumes);
        }
    }

    private final Disk disk;
    private final Path file;
    private final Scheduler scheduler;
    private final UserPrincipal root;
    private final Map<String, Grant> grants = new TreeMap<>(); // guarded by this
    private final Map<String, UserPrincipal> users = new TreeMap<>(); // by export name; guarded by this
    /** Lines of exports.tsv not understood at load: written back as they were, never dropped. */
    private final List<String> unread = new ArrayList<>();
    private volatile Runnable onChange = () -> { };

    private ExportRegistry(Disk disk, Path file, Scheduler scheduler) throws IOException {
        this.disk = disk;
        this.file = file;
        this.scheduler = scheduler;
        this.root = principal(0);
    }

    /** The exports of {@code file} (none if it does not exist), their controls set in {@code scheduler}. */
    public static ExportRegistry load(Disk disk, Path file, Scheduler scheduler) throws IOException {
        ExportRegistry r = new ExportRegistry(disk, file, scheduler);
        if (!disk.exists(file)) {
            return r;
        }
        for (String line : TsvField.readLines(disk, file)) {
            String[] f = line.split("\t", -1);
            try {
                if (f.length < 7) {
                    throw new IllegalArgumentException(f.length + " fields");
                }
                List<String> volumes = new ArrayList<>();
                for (int i = 6; i < f.length; i++) {
                    volumes.add(TsvField.unescape(f[i]));
                }
                Grant g = new Grant(TsvField.unescape(f[0]), f[1].equals("-") ? -1 : Long.parseLong(f[1]),
                        f[2].equals("-") ? null : TsvField.unescape(f[2]), new Scheduler.Qos(Integer.parseInt(f[3]),
                        Long.parseLong(f[4]), Long.parseLong(f[5])), volumes);
                if (r.grants.containsKey(g.name())) {
                    throw new IllegalArgumentException("export " + g.name() + " twice");
                }
                r.check(g);
                r.put(g);
            } catch (FsException | RuntimeException e) {
                // kept out of force, not dropped: a change an operator makes writes it back as it is
                log.error("exports.tsv: ignoring line '{}': {}", TsvField.escape(line), e.getMessage());
                r.unread.add(line);
            }
        }
        return r;
    }

    /**
     * The user of {@code uid}, by its name if it has one (a number is looked up as a name first,
     * so "1001" could be another user's name); a uid with no name is looked up as its number.
     * Principals compare by uid.
     */
    private static UserPrincipal principal(long uid) throws IOException {
        String name = Native.userName(uid);
        return FileSystems.getDefault().getUserPrincipalLookupService()
                .lookupPrincipalByName(name != null ? name : String.valueOf(uid));
    }

    /** Checks a grant's fields and that none of its volumes is another export's. */
    private void check(Grant g) throws FsException {
        Node.checkTypedName(g.name());
        if (g.uid() < -1 || g.uid() > MAX_UID) {
            throw new FsException(EINVAL, "uid " + g.uid() + " is not a uid");
        }
        if (g.uid() == -1 && g.pskIdentity() == null) {
            throw new FsException(EINVAL, "an export is for a uid (the unix socket), a TLS key identity (TCP), or both");
        }
        if (g.pskIdentity() != null && (g.pskIdentity().isEmpty() || g.pskIdentity().equals("-")
                || g.pskIdentity().contains(":") || g.pskIdentity().chars().anyMatch(c -> c < 0x20 || c == 0x7f))) {
            throw new FsException(EINVAL, "'" + TsvField.escape(g.pskIdentity()) + "' is not a key identity");
        }
        if (g.volumes().isEmpty() || g.volumes().size() > MAX_VOLUMES) {
            throw new FsException(EINVAL, "an export holds 1 to " + MAX_VOLUMES + " volumes, not "
                    + g.volumes().size());
        }
        for (String v : g.volumes()) {
            Node n = Node.resolve("/" + v);
            if (n.kind() != Node.Kind.IMAGE_ENTRY && n.kind() != Node.Kind.JOURNAL) {
                throw new FsException(EINVAL, "'" + v + "' is neither images/PATH nor journals/NAME");
            }
            String owner = owner(v);
            if (owner != null && !owner.equals(g.name())) {
                throw new FsException(EBUSY, v + " is export " + owner + "'s");
            }
        }
        if (g.volumes().stream().distinct().count() != g.volumes().size()) {
            throw new FsException(EINVAL, "a volume named twice");
        }
    }

    private void put(Grant g) throws FsException {
        users.remove(g.name());
        if (g.uid() >= 0) {
            users.put(g.name(), user(g.uid()));
        }
        grants.put(g.name(), g);
        scheduler.set(g.name(), g.qos());
    }

    private static UserPrincipal user(long uid) throws FsException {
        try {
            return principal(uid);
        } catch (IOException e) {
            throw new FsException(EINVAL, "uid " + uid + ": " + e.getMessage());
        }
    }

    /** Runs {@code r} after each change (the NBD server hangs up on clients that lost their volume). */
    public void onChange(Runnable r) {
        onChange = r;
    }

    /** Adds an export; EEXIST if the name is taken, EBUSY if a volume is another export's. */
    public synchronized void add(Grant g) throws FsException, IOException {
        if (grants.containsKey(g.name())) {
            throw new FsException(EEXIST, "export " + g.name() + " exists");
        }
        check(g);
        UserPrincipal user = g.uid() >= 0 ? user(g.uid()) : null;
        Map<String, Grant> next = new TreeMap<>(grants);
        next.put(g.name(), g);
        save(next); // written before it is in force: what is in force is what a restart finds
        grants.put(g.name(), g);
        if (user != null) {
            users.put(g.name(), user);
        }
        scheduler.set(g.name(), g.qos());
        log.info("export add export={} uid={} psk_identity={} weight={} reservation_iops={} limit_iops={} volumes={}",
                g.name(), g.uid() < 0 ? "-" : g.uid(), g.pskIdentity() == null ? "-" : g.pskIdentity(),
                g.qos().weight(), g.qos().reservationIops(), g.qos().limitIops(), g.volumes());
        onChange.run();
    }

    /** Sets an export's controls; they apply to its next requests. ENOENT if there is none. */
    public synchronized Grant set(String name, Scheduler.Qos qos) throws FsException, IOException {
        Grant g = grants.get(name);
        if (g == null) {
            throw new FsException(ENOENT, "no export " + name);
        }
        Grant changed = new Grant(name, g.uid(), g.pskIdentity(), qos, g.volumes());
        Map<String, Grant> next = new TreeMap<>(grants);
        next.put(name, changed);
        save(next);
        grants.put(name, changed);
        scheduler.set(name, qos);
        return changed;
    }

    /**
     * Removes an export: its uid sees its volumes no more, and its clients connected now are hung
     * up on (by the change listener); their requests are no longer counted in its share.
     */
    public synchronized void remove(String name) throws FsException, IOException {
        if (!grants.containsKey(name)) {
            throw new FsException(ENOENT, "no export " + name);
        }
        Map<String, Grant> next = new TreeMap<>(grants);
        next.remove(name);
        save(next);
        grants.remove(name);
        users.remove(name);
        scheduler.set(name, Scheduler.Qos.DEFAULT);
        log.info("export remove export={}", name);
        onChange.run();
    }

    public synchronized Grant get(String name) {
        return grants.get(name);
    }

    public synchronized List<Grant> grants() {
        return List.copyOf(grants.values());
    }

    /** True for root, the operator: it sees every volume. */
    public boolean isRoot(UserPrincipal user) {
        return root.equals(user);
    }

    /**
     * The volumes a client may see: of the exports of its {@code user} (unix socket) or of its key
     * {@code identity} (TCP); null for what it does not have. All of them is root's, not listed here.
     */
    public synchronized List<String> volumesOf(UserPrincipal user, String identity) {
        List<String> out = new ArrayList<>();
        for (Grant g : grants.values()) {
            if (mine(g, user, identity)) {
                out.addAll(g.volumes());
            }
        }
        return out;
    }

    private boolean mine(Grant g, UserPrincipal user, String identity) {
        return user != null && user.equals(users.get(g.name()))
                || identity != null && identity.equals(g.pskIdentity());
    }

    /** Whether a client of {@code user} (unix socket) or {@code identity} (TCP) may see and open {@code volume}. */
    public synchronized boolean allows(UserPrincipal user, String identity, String volume) {
        if (user != null && isRoot(user)) {
            return true;
        }
        String owner = owner(volume);
        return owner != null && mine(grants.get(owner), user, identity);
    }

    /** The export holding {@code volume}, or null. */
    public synchronized String owner(String volume) {
        for (Grant g : grants.values()) {
            if (g.volumes().contains(volume)) {
                return g.name();
            }
        }
        return null;
    }

    private void save(Map<String, Grant> all) throws IOException {
        StringBuilder b = new StringBuilder();
        for (Grant g : all.values()) {
            b.append(TsvField.escape(g.name())).append('\t').append(g.uid() < 0 ? "-" : "" + g.uid()).append('\t')
                    .append(g.pskIdentity() == null ? "-" : TsvField.escape(g.pskIdentity())).append('\t')
                    .append(g.qos().weight())
                    .append('\t').append(g.qos().reservationIops()).append('\t').append(g.qos().limitIops());
            for (String v : g.volumes()) {
                b.append('\t').append(TsvField.escape(v));
            }
            b.append('\n');
        }
        for (String line : unread) {
            b.append(line).append('\n');
        }
        disk.replace(file, b.toString().getBytes(StandardCharsets.UTF_8));
    }
}
