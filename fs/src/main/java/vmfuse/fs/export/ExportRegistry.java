package vmfuse.fs.export;

import static vmfuse.fs.nativeio.Native.*;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileSystems;
import java.nio.file.Files;
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
import vmfuse.nbd.Scheduler;

/*
 * The NBD door's tenants (vmfuse export add/set/remove): each export is a name, the uid its
 * clients run as, the scheduler's controls for its requests, and the volumes it holds (paths in
 * the mount: "images/tenant1/vm7/disk.raw", "journals/vm7"). A client of that uid sees and opens
 * those volumes and nothing else; root (the operator) sees them all; a volume belongs to one
 * export at most, and its requests are counted in that export's share of the scheduler.
 *
 * Kept in STORE/exports.tsv, replaced whole at each change, one line per export:
 *   NAME TAB UID TAB WEIGHT TAB RESERVATION-IOPS TAB LIMIT-IOPS TAB VOLUME [TAB VOLUME...]
 * names and volumes in their TsvField form.
 */
public final class ExportRegistry {
    private static final Logger log = LoggerFactory.getLogger(ExportRegistry.class);
    /** Volumes one export may hold. */
    public static final int MAX_VOLUMES = 64;
    public static final long MAX_UID = 0xffff_fffeL;

    /** An export: its clients' uid, its controls, its volumes. */
    public record Grant(String name, long uid, Scheduler.Qos qos, List<String> volumes) {
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

    private ExportRegistry(Disk disk, Path file, Scheduler scheduler) throws IOException {
        this.disk = disk;
        this.file = file;
        this.scheduler = scheduler;
        this.root = principal(0);
    }

    /** The exports of {@code file} (none if it does not exist), their controls set in {@code scheduler}. */
    public static ExportRegistry load(Disk disk, Path file, Scheduler scheduler) throws IOException {
        ExportRegistry r = new ExportRegistry(disk, file, scheduler);
        if (!Files.exists(file)) {
            return r;
        }
        for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            String[] f = line.split("\t", -1);
            try {
                if (f.length < 6) {
                    throw new IllegalArgumentException(f.length + " fields");
                }
                List<String> volumes = new ArrayList<>();
                for (int i = 5; i < f.length; i++) {
                    volumes.add(TsvField.unescape(f[i]));
                }
                Grant g = new Grant(TsvField.unescape(f[0]), Long.parseLong(f[1]), new Scheduler.Qos(
                        Integer.parseInt(f[2]), Long.parseLong(f[3]), Long.parseLong(f[4])), volumes);
                r.check(g);
                r.put(g);
            } catch (FsException | RuntimeException e) {
                // kept out, not dropped: the file is rewritten only by a change an operator makes
                log.error("exports.tsv: ignoring line '{}': {}", TsvField.escape(line), e.getMessage());
            }
        }
        return r;
    }

    private static UserPrincipal principal(long uid) throws IOException {
        // a number that names no user is looked up as that uid; principals compare by uid
        return FileSystems.getDefault().getUserPrincipalLookupService().lookupPrincipalByName(String.valueOf(uid));
    }

    /** Checks a grant's fields and that none of its volumes is another export's. */
    private void check(Grant g) throws FsException {
        Node.checkTypedName(g.name());
        if (g.uid() < 0 || g.uid() > MAX_UID) {
            throw new FsException(EINVAL, "uid " + g.uid() + " is not a uid");
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
        try {
            users.put(g.name(), principal(g.uid()));
        } catch (IOException e) {
            throw new FsException(EINVAL, "uid " + g.uid() + ": " + e.getMessage());
        }
        grants.put(g.name(), g);
        scheduler.set(g.name(), g.qos());
    }

    /** Adds an export; EEXIST if the name is taken, EBUSY if a volume is another export's. */
    public synchronized void add(Grant g) throws FsException, IOException {
        if (grants.containsKey(g.name())) {
            throw new FsException(EEXIST, "export " + g.name() + " exists");
        }
        check(g);
        put(g);
        save();
        log.info("export add export={} uid={} weight={} reservation_iops={} limit_iops={} volumes={}", g.name(),
                g.uid(), g.qos().weight(), g.qos().reservationIops(), g.qos().limitIops(), g.volumes());
    }

    /** Sets an export's controls; they apply to its next requests. ENOENT if there is none. */
    public synchronized Grant set(String name, Scheduler.Qos qos) throws FsException, IOException {
        Grant g = grants.get(name);
        if (g == null) {
            throw new FsException(ENOENT, "no export " + name);
        }
        Grant changed = new Grant(name, g.uid(), qos, g.volumes());
        grants.put(name, changed);
        scheduler.set(name, qos);
        save();
        return changed;
    }

    /**
     * Removes an export: its uid sees its volumes no more and their requests are no longer
     * counted in its share. Clients connected now keep their connections until they hang up.
     */
    public synchronized void remove(String name) throws FsException, IOException {
        if (grants.remove(name) == null) {
            throw new FsException(ENOENT, "no export " + name);
        }
        users.remove(name);
        scheduler.set(name, Scheduler.Qos.DEFAULT);
        save();
        log.info("export remove export={}", name);
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

    /** The volumes {@code user} may see (all of them is root's, not listed here). */
    public synchronized List<String> volumesOf(UserPrincipal user) {
        List<String> out = new ArrayList<>();
        for (Map.Entry<String, UserPrincipal> e : users.entrySet()) {
            if (e.getValue().equals(user)) {
                out.addAll(grants.get(e.getKey()).volumes());
            }
        }
        return out;
    }

    /** Whether {@code user} may see and open {@code volume}. */
    public synchronized boolean allows(UserPrincipal user, String volume) {
        if (user == null) {
            return false;
        }
        if (isRoot(user)) {
            return true;
        }
        String owner = owner(volume);
        return owner != null && users.get(owner).equals(user);
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

    private void save() throws IOException {
        StringBuilder b = new StringBuilder();
        for (Grant g : grants.values()) {
            b.append(TsvField.escape(g.name())).append('\t').append(g.uid()).append('\t').append(g.qos().weight())
                    .append('\t').append(g.qos().reservationIops()).append('\t').append(g.qos().limitIops());
            for (String v : g.volumes()) {
                b.append('\t').append(TsvField.escape(v));
            }
            b.append('\n');
        }
        disk.replace(file, b.toString().getBytes(StandardCharsets.UTF_8));
    }
}
