package vmfuse.fs.daemon;

import static vmfuse.fs.nativeio.Native.*;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileStore;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import vmfuse.fs.FsException;
import vmfuse.fs.Node;
import vmfuse.fs.TsvField;
import vmfuse.fs.control.Answer;
import vmfuse.fs.images.ImagesDir;
import vmfuse.fs.mount.VmFuseFs;
import vmfuse.fs.nativeio.LibC;
import vmfuse.fs.nativeio.StructStat;
import vmfuse.fs.space.ReleaseLedger;
import vmfuse.nbd.Scheduler;
import vmfuse.reclaimer.AgentAccess;
import vmfuse.reclaimer.AgentListener;
import vmfuse.reclaimer.ImageFence;
import vmfuse.reclaimer.Skipped;
import vmfuse.reclaimer.ThresholdPolicy;
import vmfuse.reclaimer.VmReclaimer;
import vmfuse.reclaimer.WriteTracker;

/*
 * The VMs the reclaimer serves (vmfuse vm add/remove), kept in STORE/vms.tsv, one line per VM:
 * NAME TAB IMAGE TAB AGENT-SOCKET TAB QMP-SOCKET (or -). Each has a Fence, a VmReclaimer with its
 * notice log STORE/reclaim/NAME.notices, and an AgentListener on its agent socket. The reclaimer
 * chooses the fence by the image's format (ImageFence); a raw image's comes with a WriteTracker,
 * which the filesystem routes the image's writes through. One ThresholdPolicy serves them all,
 * fed the store disk's free space.
 */
public final class VmRegistry implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(VmRegistry.class);

    record Vm(String name, String image, Path agentSocket, Path qmpSocket, AgentAccess access) {}

    private record Running(Vm vm, VmReclaimer reclaimer, AgentListener listener) {}

    private final StoreDir store;
    private final Path mnt;
    private final ImagesDir backing;
    private final VmFuseFs fs;
    private final ThresholdPolicy policy;
    private final long epoch = WriteTracker.newEpoch();
    /** Each VM's bounds on its fence state (--reclaim-max-ranges). */
    private final WriteTracker.Limits limits;
    private final Map<String, Running> running = new TreeMap<>(); // guarded by this
    /**
     * VMs of the registry that could not start at mount, with why. They stay registered (a save
     * keeps them) until `vm remove`: their notice logs wait untouched, and are dropped at a later
     * start unless the image was left as it was (see NoticeLog). Guarded by this.
     */
    private final Map<String, Failed> failed = new TreeMap<>();
    /** Lines of vms.tsv not understood at load: written back as they were, never dropped (as exports.tsv's). */
    private final List<String> unread = new ArrayList<>();

    private record Failed(Vm vm, String reason) {}
    private final Map<String, WriteTracker> trackers = new ConcurrentHashMap<>();
    /** How long one punch yields to waiting guest requests, at most: a write to its range waits on it. */
    private static final long PUNCH_YIELD_NANOS = 20_000_000L;
    private final Scheduler scheduler;

    private VmRegistry(StoreDir store, Path mnt, ImagesDir backing, VmFuseFs fs, ThresholdPolicy policy,
            WriteTracker.Limits limits, Scheduler scheduler) {
        this.scheduler = scheduler;
        this.limits = limits;
        this.store = store;
        this.mnt = mnt;
        this.backing = backing;
        this.fs = fs;
        this.policy = policy;
    }

    /** Starts every VM of the registry; one that cannot start is logged and left out. */
    public static VmRegistry open(StoreDir store, Path mnt, ImagesDir backing, VmFuseFs fs, WriteTracker.Limits limits,
            Scheduler scheduler) throws IOException {
        FileStore disk = Files.getFileStore(store.images());
        VmRegistry v = new VmRegistry(store, mnt, backing, fs, new ThresholdPolicy(disk.getUsableSpace(), disk.getTotalSpace()),
                limits, scheduler);
        if (store.disk().exists(store.vms())) {
            for (String line : TsvField.readLines(store.disk(), store.vms())) {
                String[] f = line.split("\t");
                if (f.length < 3 || f.length > 5) {
                    log.error("vms.tsv: ignoring malformed line '{}' (kept in the file)", line);
                    v.unread.add(line);
                    continue;
                }
                Vm vm;
                try {
                    vm = new Vm(f[0], f[1], Path.of(f[2]), f.length == 3 || f[3].equals("-") ? null : Path.of(f[3]),
                            f.length == 5 ? AgentAccess.parse(f[4]) : AgentAccess.ROOT); // older lines: root's
                } catch (RuntimeException e) {
                    log.error("vms.tsv: ignoring malformed line '{}' (kept in the file): {}", line, e.getMessage());
                    v.unread.add(line);
                    continue;
                }
                try {
                    v.start(vm);
                } catch (FsException | IOException | RuntimeException e) {
                    log.error("reclaim vm={} not started, it stays registered (vmfuse status says why): {}", f[0],
                            e.getMessage());
                    v.failed.put(vm.name(), new Failed(vm, e.getMessage()));
                }
            }
        }
        return v;
    }

    /** Every VM registered: running, and those that could not start. */
    private List<Vm> registered() {
        List<Vm> all = new ArrayList<>();
        running.values().forEach(r -> all.add(r.vm()));
        failed.values().forEach(f -> all.add(f.vm()));
        return all;
    }

    /** The trackers by image name, for the filesystem's writes (a live view). */
    public Map<String, WriteTracker> trackers() {
        return trackers;
    }

    /**
     * True if a VM is registered on the image at {@code path}, or on one inside the folder at
     * {@code path}: neither may be renamed, replaced or removed.
     */
    public synchronized boolean holdsVmImage(String path) {
        return running.values().stream().anyMatch(r -> Node.within(r.vm().image(), path));
    }

    /** Registers a VM and starts serving its agent; {@code qmpSocket} (null for none) is needed for qcow2. */
    public synchronized void add(String name, String image, Path agentSocket, Path qmpSocket, AgentAccess access)
            throws FsException, IOException {
        Node.checkTypedName(name);
        if (image.startsWith(Node.IMAGES + "/")) {
            image = image.substring(Node.IMAGES.length() + 1);
        }
        Node.checkImagePath(image);
        if (running.containsKey(name)) {
            throw new FsException(EEXIST, "vm " + name + " exists");
        }
        if (failed.containsKey(name)) {
            throw new FsException(EEXIST, "vm " + name + " exists and could not start (" + failed.get(name).reason()
                    + "); vmfuse vm remove it first");
        }
        for (Running r : running.values()) {
            if (r.vm().agentSocket().equals(agentSocket.toAbsolutePath().normalize())) {
                throw new FsException(EBUSY, "agent socket " + agentSocket + " is vm " + r.vm().name() + "'s");
            }
        }
        if (!agentSocket.isAbsolute()) {
            throw new FsException(EINVAL, "the agent socket must be an absolute path, not " + agentSocket);
        }
        if (qmpSocket != null && !qmpSocket.isAbsolute()) {
            throw new FsException(EINVAL, "the QMP socket must be an absolute path, not " + qmpSocket);
        }
        start(new Vm(name, image, agentSocket.normalize(), qmpSocket == null ? null : qmpSocket.normalize(), access));
        save();
        log.info("vm add vm={} image={} agent_socket={} agent_access={} qmp_socket={}", name, image, agentSocket, access,
                qmpSocket);
    }

    /**
     * Stops serving a VM and forgets it. Its waiting notices are dropped with its notice log: once
     * its image's writes are no longer watched, nothing could tell whether the guest reused those
     * ranges before a later `vm add`.
     */
    public synchronized void remove(String name) throws FsException, IOException {
        if (failed.remove(name) != null) {
            dropNotices(name);
            save();
            log.info("vm remove vm={} (it had not started)", name);
            return;
        }
        Running r = running.remove(name);
        if (r == null) {
            throw new FsException(ENOENT, "no vm " + name);
        }
        long pending = r.reclaimer().stats().bytesPending();
        stop(r);
        dropNotices(name);
        save();
        log.info("vm remove vm={} dropped_pending={}", name, pending);
    }

    /** Deletes a VM's notice log, durably: a power cut must not bring back what `vm remove` dropped. */
    private void dropNotices(String name) throws IOException {
        if (Files.isDirectory(store.reclaimDir())) { // absent: no VM ever started here
            store.disk().delete(store.reclaimDir().resolve(name + ".notices"));
            store.disk().syncDirectory(store.reclaimDir());
        }
    }

    private void start(Vm vm) throws FsException, IOException {
        // one VM per image, registered or not started: two would share one count of its writes
        // (trackers is by image), one's notices fenced by nothing (found by a review)
        for (Vm other : registered()) {
            if (!other.name().equals(vm.name()) && other.image().equals(vm.image())) {
                throw new FsException(EBUSY, "image " + vm.image() + " is vm " + other.name() + "'s");
            }
        }
        if (backing.usage(vm.image()) == null) {
            throw new FsException(ENOENT, "no image " + vm.image() + " in " + store.images());
        }
        String image = vm.image();
        if (!Files.isDirectory(store.reclaimDir())) {
            Files.createDirectories(store.reclaimDir());
            store.disk().syncDirectory(store.dir()); // else a power cut can take the notice logs' directory with them
        }
        ImageFence f;
        try {
            f = ImageFence.of(new ImageFence.Image(image, store.images().resolve(image),
                    mnt.resolve(Node.IMAGES).resolve(image), vm.qmpSocket(), store.reclaimDir().resolve(vm.name() + ".nbd"),
                    () -> usage(image, true), () -> usage(image, false), action -> fs.whileClosed(image, action),
                    (off, len) -> punch(image, off, len)), epoch, limits);
        } catch (IllegalArgumentException e) {
            throw new FsException(EINVAL, e.getMessage());
        }
        if (f.tracker() != null) {
            trackers.put(image, f.tracker()); // the image's writes are counted before any restored range can be punched
        }
        VmReclaimer reclaimer;
        AgentListener listener;
        try {
            reclaimer = VmReclaimer.open(vm.name(), image, f.diskSize(), f.fence(), policy, store.disk(),
                    store.reclaimDir().resolve(vm.name() + ".notices"), f.identity());
            reclaimer.beforeDecision(this::observeDisk);
            try {
                listener = AgentListener.start(vm.agentSocket(), vm.access(), reclaimer, vm.name());
            } catch (IOException e) {
                reclaimer.close();
                throw e;
            }
        } catch (IOException | RuntimeException e) {
            trackers.remove(image);
            throw e;
        }
        running.put(vm.name(), new Running(vm, reclaimer, listener));
    }

    /** The image file's allocated bytes, or its length; 0 if it is gone. */
    private long usage(String image, boolean allocated) {
        StructStat.Usage now = backing.usage(image);
        return now == null ? 0 : allocated ? now.allocated() : now.size();
    }

    /** A reclaimer's punch: below the guests' NBD requests (it yields to them up to 20 ms), then done here. */
    private long punch(String image, long offset, long length) throws IOException {
        try {
            scheduler.yieldToGuests(PUNCH_YIELD_NANOS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted");
        }
        try {
            int fd = backing.openImage(image, O_WRONLY);
            try {
                return fs.puncher().punch(fd, image, offset, length, ReleaseLedger.Reason.RECLAIM);
            } finally {
                LibC.INSTANCE.close(fd);
            }
        } catch (FsException e) {
            throw new IOException(e.getMessage(), e);
        }
    }

    /**
     * Stops a VM's reclaimer: its agent first (no new notice), then its punches (the one running
     * ends, no other starts), and only then are its image's writes no longer counted. Counting
     * stopped first, a write the guest made meanwhile into a range still waiting was not seen,
     * and that range was punched over it (found by a review).
     */
    private void stop(Running r) {
        try {
            r.listener().close();
        } catch (IOException e) {
            log.warn("reclaim vm={}: closing its agent socket: {}", r.vm().name(), e.getMessage());
        }
        try {
            r.reclaimer().close();
        } catch (IOException e) {
            log.warn("reclaim vm={}: closing its notice log: {}", r.vm().name(), e.getMessage());
        }
        if (r.reclaimer().punching()) {
            log.error("reclaim vm={} image={}: a punch is still running after 30 s; the image's writes stay counted",
                    r.vm().name(), r.vm().image());
        } else {
            trackers.remove(r.vm().image());
        }
    }

    /** Writes vms.tsv anew (a new file, forced, renamed over the old one, the directory synced). */
    private void save() throws IOException {
        StringBuilder b = new StringBuilder();
        for (Vm vm : registered()) {
            b.append(vm.name()).append('\t').append(vm.image()).append('\t').append(vm.agentSocket())
                    .append('\t').append(vm.qmpSocket() == null ? "-" : vm.qmpSocket().toString())
                    .append('\t').append(vm.access()).append('\n');
        }
        for (String line : unread) {
            b.append(line).append('\n');
        }
        store.disk().replace(store.vms(), b.toString().getBytes(StandardCharsets.UTF_8));
    }

    /** Feeds the policy the store disk's free space. */
    public void observeDisk() {
        try {
            FileStore disk = Files.getFileStore(store.images());
            policy.observeDisk(disk.getUsableSpace(), disk.getTotalSpace());
        } catch (IOException e) {
            log.warn("reclaim: cannot stat the store's disk: {}", e.getMessage());
        }
    }

    /** The daemon's timer: observes the disk, then every VM's waiting notices go if the threshold says so now. */
    public void tick() {
        observeDisk();
        List<VmReclaimer> all;
        synchronized (this) {
            all = running.values().stream().map(Running::reclaimer).toList();
        }
        all.forEach(VmReclaimer::reconsider);
    }

    private synchronized VmReclaimer reclaimer(String name) throws FsException {
        Running run = running.get(name);
        if (run == null) {
            throw new FsException(ENOENT, "no vm " + name);
        }
        return run.reclaimer();
    }

    /** A VM's counts. */
    public VmReclaimer.Stats stats(String name) throws FsException {
        return reclaimer(name).stats();
    }

    /**
     * `vmfuse vm reclaim NAME`: carries out the VM's waiting notices now, whatever the threshold;
     * an IOException says why what waits could not go.
     */
    public VmReclaimer.Stats reclaimNow(String name) throws FsException, IOException {
        VmReclaimer r = reclaimer(name);
        log.info("vm reclaim vm={}: carrying out what waits", name);
        return r.reclaimNow();
    }

    /** The counts of every VM served, by name (metrics). */
    public synchronized Map<String, VmReclaimer.Stats> statsByVm() {
        Map<String, VmReclaimer.Stats> out = new TreeMap<>();
        running.forEach((name, r) -> out.put(name, r.reclaimer().stats()));
        return out;
    }

    /** The VMs registered that could not start (metrics; status says why). */
    public synchronized List<String> failedNames() {
        return List.copyOf(failed.keySet());
    }

    /**
     * One line per VM for `vmfuse status`: vm NAME IMAGE SOCKET notices refused pending punched freed
     * skipped-partial skipped-after-fence skipped-written-while-pending threshold skipped-not-owned
     * dropped-fence-lost; and vm-failed NAME IMAGE REASON per VM that could not start.
     */
    /** The VMs that could not start, then those served, as the status answer's lines. */
    public synchronized List<Answer> status() {
        List<Answer> out = new ArrayList<>();
        for (Failed f : failed.values()) {
            out.add(new Answer.VmFailed(f.vm().name(), f.vm().image(), f.reason()));
        }
        for (Running r : running.values()) {
            VmReclaimer.Stats s = r.reclaimer().stats();
            out.add(new Answer.Vm(r.vm().name(), r.vm().image(), r.vm().agentSocket().toString(), s.notices(),
                    s.refused(), s.bytesPending(), s.bytesPunched(), s.bytesFreed(),
                    s.skipped().getOrDefault(Skipped.PARTIAL_BLOCK, 0L),
                    s.skipped().getOrDefault(Skipped.WRITTEN_AFTER_FENCE, 0L),
                    s.skipped().getOrDefault(Skipped.WRITTEN_WHILE_PENDING, 0L), policy.threshold(),
                    s.skipped().getOrDefault(Skipped.NOT_OWNED, 0L), s.dropped()));
        }
        return out;
    }

    @Override
    public synchronized void close() {
        for (Running r : running.values()) {
            stop(r);
        }
        running.clear();
    }
}
