package vmfuse.reclaimer;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.LongSupplier;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import vmfuse.durable.Disk;
import vmfuse.durable.LogRate;
import vmfuse.durable.RealDisk;

/*
 * The reclaimer of one VM: answers its agent (AgentSession.Host), keeps its notices in a
 * NoticeLog, decides with the shared ThresholdPolicy, and punches through the image's Fence
 * (RawFence: the filesystem's count of writes; QemuFence: QEMU's dirty bitmaps), so nothing
 * written after a notice's fence token is punched and no write races a punch.
 *
 * Only whole 4 KiB blocks are punched: a range is cut inward to 4 KiB boundaries when admitted.
 *
 * Locks: this object's monitor guards the log and the counters; it is never held while waiting
 * for the fence's hold on writes (a punch runs on the reclaim thread and takes the monitor only
 * inside the hold to log what it did; a raw image's write takes the monitor inside the write
 * tracker's gate to log a cut). So the order is always the hold, then the monitor.
 */
public final class VmReclaimer implements AgentSession.Host, WriteTracker.Listener, AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(VmReclaimer.class);
    static final long BLOCK = 4096;

    /** What `vmfuse status` shows for the VM. */
    public record Stats(long notices, long refused, long bytesPending, long bytesPunched, long bytesFreed,
            Map<Skipped, Long> skipped) {
        /** Bytes of notices dropped, never punched: their fence could not be proved, or the image's metadata not trusted. */
        public long dropped() {
            return skipped.getOrDefault(Skipped.FENCE_LOST, 0L) + skipped.getOrDefault(Skipped.UNWATCHED, 0L);
        }
    }

    private final String vm;
    private final String image;
    private final LongSupplier diskSize;
    private final Fence fence;
    private final ThresholdPolicy policy;
    private final NoticeLog notices;
    /** The raw image's identity, recorded at a clean close; null (qcow2: QEMU's bitmaps prove the fence). */
    private ImageIdentity identity;
    private final ExecutorService reclaim;
    private volatile Runnable beforeDecision = () -> { };
    /** A carry-out is queued and has not started: another decision need not queue one. */
    private final AtomicBoolean queued = new AtomicBoolean();
    /** After a failed carry-out, reconsider() waits until then (nanoTime) before it tries again. */
    private volatile long quietUntil = System.nanoTime();
    /** close() began: no further notice is carried out (one being punched ends first). */
    private volatile boolean closing;
    // guarded by this
    private long received;
    private long refused;
    private long punched;
    private long freed;
    private final Map<Skipped, Long> skipped = new EnumMap<>(Skipped.class);

    private VmReclaimer(String vm, String image, LongSupplier diskSize, Fence fence, ThresholdPolicy policy,
            NoticeLog notices) {
        this.vm = vm;
        this.image = image;
        this.diskSize = diskSize;
        this.fence = fence;
        this.policy = policy;
        this.notices = notices;
        this.reclaim = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "reclaim-" + vm);
            t.setDaemon(true);
            return t;
        });
    }

    /**
     * The reclaimer of {@code vm}, whose image {@code image} has {@code fence}; its notice log is
     * {@code logFile}. What waits in the log is pending again, and goes to the policy.
     */
    public static VmReclaimer open(String vm, String image, LongSupplier diskSize, Fence fence,
            ThresholdPolicy policy, Path logFile) throws IOException {
        return open(vm, image, diskSize, fence, policy, RealDisk.of(null), logFile, null);
    }

    /**
     * As the other open, its notice log written through {@code disk}. With {@code identity} (a raw
     * image's, see {@link ImageIdentity}), notices restored are kept only if the image was watched
     * without a gap since they came (see NoticeLog), and a clean close records the identity.
     */
    public static VmReclaimer open(String vm, String image, LongSupplier diskSize, Fence fence,
            ThresholdPolicy policy, Disk disk, Path logFile, ImageIdentity identity) throws IOException {
        NoticeLog notices = NoticeLog.open(disk, logFile, identity == null ? null : identity.now());
        VmReclaimer r = new VmReclaimer(vm, image, diskSize, fence, policy, notices);
        r.identity = identity;
        if (!notices.dropped().isEmpty()) {
            long bytes = 0;
            for (NoticeLog.Pending p : notices.dropped()) {
                bytes += p.ranges().bytes();
            }
            r.add(Skipped.UNWATCHED, bytes);
            log.warn("reclaim vm={} image={} dropped {} notice(s) of {} bytes restored from its log: its writes were "
                    + "not watched without a gap since they came (the log's last clean stop saw {}, the image is {} "
                    + "now); none of them is punched", vm, image, notices.dropped().size(), bytes,
                    notices.closedAs() == null ? "nothing: no clean stop" : notices.closedAs(), identity.now());
        }
        fence.onPendingWritten(r);
        long bytes = 0;
        for (NoticeLog.Pending p : notices.pending()) {
            fence.restore(p.token(), p.ranges().list());
            bytes += p.ranges().bytes();
        }
        if (bytes > 0) {
            log.info("reclaim vm={} image={} restored pending={} notices={}", vm, image, bytes, notices.pending().size());
            r.decide();
        }
        return r;
    }

    @Override
    public long diskSize() {
        return diskSize.getAsLong();
    }

    @Override
    public synchronized long lastSeq() {
        return notices.lastSeq();
    }

    @Override
    public long fence() throws IOException {
        return fence.token();
    }

    @Override
    public synchronized void refused(String reason, String detail) {
        refused++;
        log.warn("reclaim vm={} refused reason={} {}", vm, reason, detail);
    }

    /** A guest sends notices at will, and the log shares the store's disk: 20 lines a second at most. */
    private final LogRate noticeLogRate = new LogRate(20);

    /** The ranges a VM's waiting notices may hold between them: about 100 bytes of heap each. */
    static final int MAX_HELD_RANGES = 65536;

    @Override
    public String notice(Notice n) throws ProtocolException, IOException {
        synchronized (this) {
            if (n.seq() <= notices.lastSeq()) {
                return "ACK " + n.seq(); // a resend: already in the log
            }
            List<Range> blocks = new ArrayList<>();
            long inward = 0;
            for (Range r : n.ranges()) {
                long from = (r.offset() + BLOCK - 1) / BLOCK * BLOCK;
                long to = r.end() / BLOCK * BLOCK;
                if (to > from) {
                    blocks.add(Range.between(from, to));
                    inward += r.length() - (to - from);
                } else {
                    inward += r.length();
                }
            }
            if (notices.rangesHeld() + blocks.size() > MAX_HELD_RANGES) {
                // the fence merges what waits, but each notice is logged and held whole: a guest
                // resending the same ranges grew the log and the heap without bound (a review)
                throw new ProtocolException("busy", "this VM's waiting notices hold " + notices.rangesHeld()
                        + " ranges, at most " + MAX_HELD_RANGES + ": send it again once they went");
            }
            List<Range> safe = fence.admit(n.token(), blocks); // stale fence: refused, nothing logged
            long kept = ByteRanges.of(safe).bytes();
            long requested = ByteRanges.of(blocks).bytes();
            notices.accepted(n, safe);
            received++;
            add(Skipped.PARTIAL_BLOCK, inward);
            add(Skipped.WRITTEN_AFTER_FENCE, requested - kept);
            if (noticeLogRate.allow(k -> log.info("reclaim vm={}: {} more notices in the last second not logged "
                    + "(vmfuse status counts them)", vm, k))) {
                log.info("reclaim vm={} image={} notice seq={} file_size={} ranges={} admitted={} written_after_fence={}",
                        vm, image, n.seq(), n.fileSize(), n.ranges().size(), kept, requested - kept);
            }
        }
        decide();
        return "ACK " + n.seq();
    }

    private void add(Skipped why, long n) {
        if (n > 0) {
            skipped.merge(why, n, Long::sum);
        }
    }

    /** Runs before each decision: the owner feeds the policy the disk's free space there. */
    public void beforeDecision(Runnable r) {
        beforeDecision = r;
    }

    /** Carries out what waits if its sum has reached the threshold (after a notice, or at start). */
    private void decide() {
        beforeDecision.run();
        carryOutIfDue();
    }

    private void carryOutIfDue() {
        if (policy.due(fence.pendingBytes(), Math.max(1, diskSize())) && queued.compareAndSet(false, true)) {
            reclaim.execute(this::carryOut);
        }
    }

    /**
     * Asks the policy again about what waits, without a new notice (the owner calls it after each
     * observation of the disk: a filling disk lowers the threshold). After a failed carry-out it
     * waits a minute before trying again.
     */
    public void reconsider() {
        if (System.nanoTime() - quietUntil >= 0) {
            carryOutIfDue(); // the owner has just observed the disk: observing again would halve twice
        }
    }

    /**
     * Carries out every notice waiting now, whatever the threshold (`vmfuse vm reclaim`), and
     * waits for it; an IOException says why what waits could not be carried out.
     */
    public Stats reclaimNow() throws IOException {
        String failed;
        try {
            failed = reclaim.submit(this::carryOut).get(10, TimeUnit.MINUTES);
        } catch (ExecutionException | TimeoutException e) {
            throw new IOException(e.toString(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted", e);
        }
        if (failed != null) {
            throw new IOException(failed);
        }
        return stats();
    }

    /**
     * Carries out every notice waiting: punches what is still pending of it, then marks it done.
     * Stops at the first that fails, and returns why (null if none did).
     */
    String carryOut() {
        queued.set(false);
        List<NoticeLog.Pending> todo;
        synchronized (this) {
            todo = notices.pending();
        }
        for (NoticeLog.Pending p : todo) {
            if (closing) {
                return null; // its owner stops counting the image's writes once this returns
            }
            List<Range> ranges;
            synchronized (this) {
                ranges = p.ranges().list();
            }
            try {
                fence.carryOut(p.token(), ranges, (still, f, notPunched) -> {
                    long n = 0;
                    for (Range r : still) {
                        n += r.length();
                    }
                    synchronized (this) {
                        // before writes resume, durably: what was punched leaves every notice that
                        // holds it (an agent may send a range twice), else a write there from now on
                        // cuts nothing (the range is no longer pending) and a restart punched it again
                        notices.cut(still);
                        notices.done(p.seq()); // a re-punch after a crash finds nothing new
                        punched += n;
                        freed += f;
                        notPunched.forEach(this::add);
                    }
                    log.info("reclaim vm={} image={} punched seq={} bytes={} freed={} reason=guest-deleted",
                            vm, image, p.seq(), n, f);
                });
            } catch (IOException | RuntimeException e) {
                quietUntil = System.nanoTime() + TimeUnit.MINUTES.toNanos(1);
                log.error("reclaim vm={} image={} punch of notice {} failed, it waits: {}", vm, image, p.seq(),
                        e.toString());
                return "notice " + p.seq() + ": " + e.getMessage(); // the next would meet the same trouble
            }
        }
        return null;
    }

    /** A write landed on ranges waiting in the log: they leave it (durably) before the write goes on. */
    @Override
    public synchronized void written(List<Range> cut) throws IOException {
        notices.cut(cut);
        add(Skipped.WRITTEN_WHILE_PENDING, ByteRanges.of(cut).bytes());
    }

    public synchronized Stats stats() {
        return new Stats(received, refused, fence.pendingBytes(), punched, freed, new EnumMap<>(skipped));
    }

    public String vm() {
        return vm;
    }

    public String image() {
        return image;
    }

    /**
     * After close(): a punch is still running (it outlived close's wait), so the image's writes
     * must go on being counted for it.
     */
    public boolean punching() {
        return !reclaim.isTerminated();
    }

    /** Waits until the punches decided so far are done. */
    public void awaitIdle() throws Exception {
        reclaim.submit(() -> { }).get(60, TimeUnit.SECONDS);
    }

    /**
     * Stops: no notice is carried out after the one being punched, which it waits for (30 s at
     * most: see {@link #punching}), and the log records a clean stop.
     */
    @Override
    public void close() throws IOException {
        closing = true;
        reclaim.shutdown();
        try {
            reclaim.awaitTermination(30, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        synchronized (this) {
            if (identity != null) {
                try {
                    notices.closed(identity.now()); // nothing is punched from here on: watched to this point
                } catch (IOException e) {
                    log.warn("reclaim vm={}: cannot record the clean stop in its notice log ({}): what waits in it "
                            + "is dropped at the next start", vm, e.getMessage());
                }
            }
            notices.close();
        }
    }
}
