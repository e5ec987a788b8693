package vmfuse.fs.daemon;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Consumer;

import io.prometheus.metrics.exporter.httpserver.HTTPServer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import vmfuse.fs.FsException;
import vmfuse.fs.TsvField;
import vmfuse.fs.export.ExportRegistry;
import vmfuse.fs.export.VolumeExports;
import vmfuse.fs.images.ImageFiles;
import vmfuse.fs.images.ImagesDir;
import vmfuse.fs.journals.JournalFiles;
import vmfuse.fs.metrics.Metrics;
import vmfuse.fs.mount.Fusermount;
import vmfuse.fs.mount.MountPoints;
import vmfuse.fs.mount.VmFuseFs;
import vmfuse.fs.nativeio.Native;
import vmfuse.fs.nativeio.ThreadNice;
import vmfuse.fs.space.HolePuncher;
import vmfuse.fs.space.ReleaseLedger;
import vmfuse.journal.Durability;
import vmfuse.journal.JournalStore;
import vmfuse.journal.StoreException;
import vmfuse.nbd.CpuPriority;
import vmfuse.nbd.NbdServer;
import vmfuse.nbd.Scheduler;
import vmfuse.nbd.TlsPsk;
import vmfuse.reclaimer.WriteTracker;

/**
 * One mount, from start to clean exit: takes the store's lock, mounts, serves the FUSE loop and
 * the control socket, and on unmount (vmfuse umount, fusermount -u, SIGTERM, SIGINT) closes
 * everything, syncs the backing filesystem and saves the release counts before it exits.
 */
public final class Daemon {
    private static final Logger log = LoggerFactory.getLogger(Daemon.class);
    private static final long MOUNT_TIMEOUT_SECONDS = 30;
    /** How long a signal waits for the FUSE loop to end after the unmount before closing the store itself. */
    private static final long LOOP_END_SECONDS = 10;
    /** Below the unit's TimeoutStopSec (120 s), after which systemd kills the daemon. */
    private static final long SHUTDOWN_TIMEOUT_SECONDS = 110;

    /**
     * FUSE options every mount gets, before the operator's -o (which may override them).
     * big_writes + max_write: 128 KiB writes instead of 4 KiB ones (FACTS.md: 4x the throughput).
     * splice_write, splice_move: reads are spliced from the backing file to /dev/fuse (read_buf).
     * No hard_remove: with it libfuse 2 fails fstat on an unlinked open file; VmFuseFs instead
     * takes libfuse's rename to .fuse_hiddenNNN as the unlink (the backing file goes at once).
     * allow_other + default_permissions: QEMU may run as another user; the kernel checks modes.
     * no_remote_lock: byte-range locks (QEMU's image locking uses OFD locks) and flock are kept by
     * the kernel on the mount's files. libfuse 2's high-level layer, given the locks, keeps its
     * own table and never drops an OFD lock when its file closes (the kernel sends no unlock for
     * it), so an image would stay locked after its QEMU exited.
     */
    public static final List<String> DEFAULT_OPTIONS = List.of(
            "subtype=vmfuse", "big_writes", "max_write=131072", "splice_write", "splice_move", "allow_other", "default_permissions", "no_remote_lock");

    private static volatile boolean shuttingDown;

    /**
     * What the operator asked for: {@code nbd} null for no NBD door; {@code ioWorkers}: the
     * scheduler's; {@code metrics} where to serve Prometheus metrics, null for nowhere.
     */
    public record Options(Path store, Path mountPoint, List<String> fuseOptions, boolean force, int threads,
            Durability journalDurability, long journalMemory, int reclaimMaxRanges, NbdOptions nbd, int ioWorkers,
            InetSocketAddress metrics) {}

    /** The NBD door: a unix socket, TCP (with its TLS keys, required), or both. */
    public record NbdOptions(Path socket, InetSocketAddress tcp, Path tlsPsk, Duration poll) {}

    /** NBD clients at once (each two threads, and at most 8 MiB of the NBD server's 64 MiB of buffers). */
    static final int NBD_MAX_CLIENTS = 64;

    /**
     * The scheduler's workers: the NBD door's requests in flight to the disk at once. Few, so that
     * requests wait in the scheduler, where their order is decided, not in the disk's queue.
     */
    public static final int DEFAULT_IO_WORKERS = 8;

    /** Threads serving FUSE requests: enough for a few VMs' queues; each idle one costs a stack. */
    public static final int DEFAULT_THREADS = 16;

    private Daemon() {}

    /** True once a signal started the JVM's shutdown: System.exit would then block forever. */
    public static boolean shuttingDown() {
        return shuttingDown;
    }

    /** Mounts and serves until unmounted. Fails before mounting with a one-line reason. */
    public static void run(Options o) throws FsException {
        StoreDir store = StoreDir.open(o.store());
        Path mnt = o.mountPoint().toAbsolutePath().normalize();
        try (FileChannel lockChannel = FileChannel.open(store.lockFile(), StandardOpenOption.CREATE,
                StandardOpenOption.WRITE)) {
            lockStore(store, lockChannel);
            MountPoints.checkMountable(mnt, o.force());
            serve(store, mnt, o);
        } catch (IOException e) {
            throw new FsException(Native.EIO, "cannot lock store " + store.dir() + ": " + StoreDir.reason(e));
        }
    }

    /**
     * Everything {@link #run} checks before it mounts, without mounting: the store, that no other
     * daemon serves it, and the mount point. Returns the opened store.
     */
    public static StoreDir preflight(Options o) throws FsException {
        StoreDir store = StoreDir.open(o.store());
        try (FileChannel lockChannel = FileChannel.open(store.lockFile(), StandardOpenOption.CREATE,
                StandardOpenOption.WRITE)) {
            lockStore(store, lockChannel);
        } catch (IOException e) {
            throw new FsException(Native.EIO, "cannot lock store " + store.dir() + ": " + StoreDir.reason(e));
        }
        MountPoints.checkMountable(o.mountPoint().toAbsolutePath().normalize(), o.force());
        return store;
    }

    /** One daemon per store: a lock on STORE/vmfuse.lock, held until the process ends. */
    private static void lockStore(StoreDir store, FileChannel lockChannel) throws FsException, IOException {
        FileLock lock = lockChannel.tryLock();
        if (lock == null) {
            throw new FsException(Native.EBUSY, "store " + store.dir() + " is in use by another vmfuse daemon ("
                    + describeHolder(store) + ")");
        }
    }

    private static String describeHolder(StoreDir store) {
        return store.readPid().map(d -> "pid " + d.pid() + (d.mountPoint() != null ? ", mounted at " + d.mountPoint() : ""))
                .orElse("pid unknown");
    }

    private static void serve(StoreDir store, Path mnt, Options o) throws FsException, IOException {
        List<String> userOptions = o.fuseOptions();
        int threads = o.threads();
        List<String> options = new ArrayList<>();
        options.add("fsname=" + store.dir());
        options.addAll(DEFAULT_OPTIONS);
        options.addAll(userOptions);

        ReleaseLedger ledger = ReleaseLedger.load(store.disk(), store.ledger());
        // a journal store that cannot be opened is served broken, with no device: the images are
        // served whatever its state (JournalStore#openOrBroken)
        JournalStore journals;
        try {
            journals = JournalStore.openOrBroken(store.disk(), store.journals(), o.journalMemory());
        } catch (StoreException e) {
            throw new FsException(e.errno(), e.getMessage());
        }
        try (ImagesDir backing = ImagesDir.open(store.images()); journals;
                Scheduler scheduler = new Scheduler(o.ioWorkers(), cpuPriority(o.nbd()))) {
            HolePuncher puncher = new HolePuncher(ledger);
            ImageFiles images = new ImageFiles(backing, puncher, ledger);
            JournalFiles devices = new JournalFiles(journals, o.journalDurability(), ledger);
            VmFuseFs fs = new VmFuseFs(backing, images, devices, puncher);
            fs.dropHidden();
            VmRegistry vms = VmRegistry.open(store, mnt, backing, fs, WriteTracker.Limits.ofRanges(o.reclaimMaxRanges()),
                    scheduler);
            fs.writeTrackers(vms.trackers(), vms::holdsVmImage);
            // the NBD door listens before the mount is made: a socket path that cannot be taken fails the mount
            ExportRegistry exports = ExportRegistry.load(store.disk(), store.exports(), scheduler);
            VolumeExports volumes = new VolumeExports(backing, images, devices, exports);
            NbdServer nbd = listenNbd(o.nbd(), volumes, scheduler);
            if (nbd != null) {
                exports.onChange(nbd::revalidate);
            }
            HTTPServer metrics = null;
            try {
                metrics = serveMetrics(o.metrics(), new Metrics.Sources(store.images(), backing, fs::openCounts,
                        ledger, journals, vms::statsByVm, vms::failedNames, scheduler));
                mountAndServe(store, mnt, o, options, threads, ledger, journals, backing, fs, vms, nbd, exports,
                        volumes, scheduler);
            } finally {
                if (metrics != null) {
                    metrics.close();
                }
                if (nbd != null) {
                    nbd.close(); // idempotent: serving closed it before the store's last commit
                }
            }
        }
    }

    /** Serves metrics at {@code address}, or nothing without one; EIO with the reason if it cannot listen. */
    private static HTTPServer serveMetrics(InetSocketAddress address, Metrics.Sources sources) throws FsException {
        if (address == null) {
            return null;
        }
        try {
            HTTPServer server = Metrics.serve(address, new Metrics(sources));
            log.info("metrics at http://{}:{}/metrics", address.getHostString(), server.getPort());
            return server;
        } catch (IOException e) {
            throw new FsException(Native.EIO, "cannot serve metrics at " + address.getHostString() + ":"
                    + address.getPort() + ": " + StoreDir.reason(e));
        }
    }

    /**
     * With the NBD door: bulk requests yield the CPU to small ones ({@link CpuPriority}), if this
     * process may raise a thread's priority back after lowering it.
     */
    private static CpuPriority cpuPriority(NbdOptions door) {
        if (door == null) {
            return CpuPriority.NONE;
        }
        String why = ThreadNice.check(CpuPriority.BULK_NICE);
        if (why != null) {
            log.warn("nbd cpu priority off: {}; a client's bulk copies take the CPU as its small requests do", why);
            return CpuPriority.NONE;
        }
        log.info("nbd cpu priority: reads and writes of {} KiB or more run at nice {}, smaller requests at 0",
                CpuPriority.BULK_BYTES >> 10, CpuPriority.BULK_NICE);
        return new CpuPriority(ThreadNice::set);
    }

    /** Listens for NBD, or nothing without a door; EIO (EINVAL for bad keys) with the reason if it cannot. */
    private static NbdServer listenNbd(NbdOptions door, VolumeExports exports, Scheduler scheduler) throws FsException {
        if (door == null) {
            return null;
        }
        List<NbdServer.Endpoint> endpoints = new ArrayList<>();
        if (door.socket() != null) {
            endpoints.add(new NbdServer.Unix(door.socket()));
        }
        if (door.tcp() != null) {
            TlsPsk psk;
            try {
                psk = TlsPsk.load(door.tlsPsk());
            } catch (IOException e) {
                throw new FsException(Native.EINVAL, "cannot use the TLS keys " + door.tlsPsk() + ": " + e.getMessage());
            }
            endpoints.add(new NbdServer.Tcp(door.tcp(), psk));
        }
        try {
            return NbdServer.listen(endpoints, exports, NbdServer.Limits.of(NBD_MAX_CLIENTS).withPoll(door.poll()),
                    scheduler);
        } catch (IOException e) {
            throw new FsException(Native.EIO, "cannot listen for NBD: " + StoreDir.reason(e));
        }
    }

    /** Mounts, serves until the mount goes away, then closes the doors and the core in order. */
    private static void mountAndServe(StoreDir store, Path mnt, Options o, List<String> options, int threads,
            ReleaseLedger ledger, JournalStore journals, ImagesDir backing, VmFuseFs fs, VmRegistry vms, NbdServer nbd,
            ExportRegistry exports, VolumeExports volumes, Scheduler scheduler) throws FsException, IOException {
        CompletableFuture<Integer> loop = new CompletableFuture<>();
        Thread loopThread = new Thread(() -> {
            try {
                loop.complete(fs.run(mnt.toString(), options, threads));
            } catch (Throwable t) {
                loop.completeExceptionally(t);
            }
        }, "fuse-loop");
        loopThread.start();
        awaitMount(fs, loop, mnt);

        long pid = ProcessHandle.current().pid();
        store.writePid(pid, mnt);
        CountDownLatch cleanedUp = new CountDownLatch(1);
        // a timer each, so none waits on another: a qcow2 reclaim that takes minutes of QMP calls
        // (vms.tick) must not hold off the 5 s commit of close-mode journal devices or the ledger
        ScheduledExecutorService ledgerTimer = timer("vmfuse-ledger");
        ScheduledExecutorService checkpointTimer = timer("vmfuse-checkpoint");
        ScheduledExecutorService reclaimTimer = timer("vmfuse-reclaim");
        ledgerTimer.scheduleWithFixedDelay(() -> save(ledger, false), 2, 2, TimeUnit.SECONDS);
        long every = Long.getLong("vmfuse.test.checkpointSeconds", CHECKPOINT_SECONDS); // a test's may be longer
        checkpointTimer.scheduleWithFixedDelay(() -> checkpoint(fs), every, every,
                TimeUnit.SECONDS);
        reclaimTimer.scheduleWithFixedDelay(vms::tick, 5, 5, TimeUnit.SECONDS);
        AtomicBoolean closed = new AtomicBoolean();
        // Once, by whichever comes first: the main thread when the FUSE loop ends, or the shutdown
        // hook of a signal when it cannot end (a process still has a file open on the lazily
        // detached mount, which keeps the kernel's connection and the loop alive: the JVM then
        // went without committing the journal devices or syncing; found by a review).
        Consumer<Boolean> close = loopEnded -> {
            synchronized (closed) {
                if (!closed.getAndSet(true)) {
                    closeCore(store, mnt, pid, loopEnded, ledger, journals, backing, fs, vms, nbd, scheduler,
                            List.of(ledgerTimer, checkpointTimer), reclaimTimer);
                    cleanedUp.countDown();
                }
            }
        };
        Runtime.getRuntime().addShutdownHook(new Thread(() -> onSignal(mnt, loop, cleanedUp, close),
                "vmfuse-shutdown"));
        try (ControlServer control = new ControlServer(store.socket(),
                new ControlHandler(store, mnt, pid, backing, ledger, fs, journals, vms, exports, volumes,
                        scheduler)::answer)) {
            log.info("mounted store={} mountpoint={} pid={} threads={} options={}", store.dir(), mnt, pid, threads,
                    String.join(",", options));
            SystemdNotify.send("READY=1\nSTATUS=serving " + store.dir() + " at " + mnt);
            int rc = join(loop);
            log.info("fuse loop ended rc={}", rc);
            SystemdNotify.send("STOPPING=1\nSTATUS=unmounted; closing the store");
        } finally {
            close.accept(true);
        }
    }

    /**
     * Closes the doors and the core in order, commits the journal devices, syncs the store, saves
     * the ledger and records the unmount. With the FUSE loop still running ({@code loopEnded}
     * false: a signal's last resort) images stay open: a FUSE request may still be in a pwrite
     * on one, and its descriptor's number must not go to another file.
     */
    private static void closeCore(StoreDir store, Path mnt, long pid, boolean loopEnded, ReleaseLedger ledger,
            JournalStore journals, ImagesDir backing, VmFuseFs fs, VmRegistry vms, NbdServer nbd, Scheduler scheduler,
            List<ScheduledExecutorService> timers, ScheduledExecutorService reclaimTimer) {
        // the reclaimer's may be minutes into QMP calls: interrupted; the others are not, as a
        // checkpoint or a ledger save an interrupt reached could close its files for good
        // (journals.close() below waits for a checkpoint still running, on the store's monitor)
        reclaimTimer.shutdownNow();
        timers.forEach(ScheduledExecutorService::shutdown);
        if (nbd != null) {
            nbd.close(); // its clients hung up and their volumes closed before the core closes
        }
        // the workers' requests end before any image is closed: one still in a pwrite after
        // its descriptor closed would write into whatever file got that number next (the
        // ledger, the journal store; found by a review). One that outlives the wait keeps
        // every image open until the process exits.
        boolean workersDone = scheduler.stop();
        vms.close();
        if (workersDone && loopEnded) {
            fs.closeAll();
        } else if (!workersDone) {
            log.error("NBD requests still at the disk after 30 s: images stay open until the daemon exits");
        } else {
            log.warn("the mount is still in use (detached lazily): its images stay open until the daemon exits");
        }
        List<String> failed = new ArrayList<>();
        try {
            journals.close(); // commits every device; before the shutdown hook may let the JVM go
        } catch (IOException | RuntimeException e) {
            log.error("closing the journal store failed: {}", e.toString());
            failed.add("closing the journal store failed: " + e.getMessage());
        }
        try {
            backing.syncAll();
        } catch (FsException e) {
            log.error("final sync failed: {}", e.getMessage());
            failed.add("the final sync failed: " + e.getMessage());
        }
        save(ledger, true);
        recordUnmount(store, pid, failed);
        try {
            Files.deleteIfExists(store.pidFile());
        } catch (IOException e) {
            log.warn("cannot remove {}: {}", store.pidFile(), e.getMessage());
        }
        log.info("unmounted store={} mountpoint={}", store.dir(), mnt);
        flushLogs();
    }

    /** Waits until the kernel's INIT is answered, or fails with the reason if the loop ended first. */
    private static void awaitMount(VmFuseFs fs, CompletableFuture<Integer> loop, Path mnt) throws FsException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(MOUNT_TIMEOUT_SECONDS);
        try {
            while (!fs.mountedLatch().await(50, TimeUnit.MILLISECONDS)) {
                if (loop.isDone()) {
                    throw new FsException(Native.EIO, "cannot mount " + mnt + ": libfuse exited with code "
                            + join(loop) + " (its reason is in the lines above)");
                }
                if (System.nanoTime() > deadline) {
                    throw new FsException(Native.EIO, "mount of " + mnt + " not live after " + MOUNT_TIMEOUT_SECONDS + " s");
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new FsException(Native.EIO, "interrupted while mounting " + mnt);
        }
    }

    private static int join(CompletableFuture<Integer> loop) {
        try {
            return loop.get();
        } catch (ExecutionException e) {
            log.error("fuse loop failed", e.getCause());
            return -1;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return -1;
        }
    }

    /**
     * SIGTERM/SIGINT: unmount (lazily if busy), let the main thread clean up, then let the JVM go.
     * If the loop does not end (a lazily detached mount a process still holds open), this thread
     * closes the core itself ({@code close}, once, with the loop running).
     */
    private static void onSignal(Path mnt, CompletableFuture<Integer> loop, CountDownLatch cleanedUp,
            Consumer<Boolean> close) {
        shuttingDown = true;
        if (!loop.isDone()) {
            log.info("signal received: unmounting {}", mnt);
            try {
                Fusermount.unmount(mnt, false);
            } catch (FsException e) {
                log.warn("unmount of {} failed ({}); detaching it lazily", mnt, e.getMessage());
                try {
                    Fusermount.unmount(mnt, true);
                } catch (FsException e2) {
                    log.error("lazy unmount of {} failed: {}", mnt, e2.getMessage());
                }
            }
        }
        try {
            loop.get(LOOP_END_SECONDS, TimeUnit.SECONDS);
        } catch (TimeoutException e) {
            log.warn("the mount is still held open after {} s: closing the store with it detached", LOOP_END_SECONDS);
            close.accept(false);
        } catch (InterruptedException | ExecutionException e) {
            log.error("shutdown did not complete cleanly: {}", e.toString());
        }
        try {
            // the closing waits are bounded: NBD clients and the scheduler's workers 30 s each, a
            // VM's punch 30 s, then the journal store's last commit and a sync
            if (!cleanedUp.await(SHUTDOWN_TIMEOUT_SECONDS, TimeUnit.SECONDS)) {
                log.error("shutdown did not complete within {} s", SHUTDOWN_TIMEOUT_SECONDS);
            }
        } catch (InterruptedException e) {
            log.error("shutdown did not complete cleanly: {}", e.toString());
        }
    }

    /**
     * Writes out what the asynchronous log appender still holds. Called last: the JVM may halt as
     * soon as the shutdown hook sees the clean-up done, and a queued line would be lost.
     */
    private static void flushLogs() {
        if (LoggerFactory.getILoggerFactory() instanceof ch.qos.logback.classic.LoggerContext ctx) {
            ctx.stop();
        }
    }

    /** How often journal devices of durability close are committed while mounted. */
    public static final long CHECKPOINT_SECONDS = 5;

    /** A single-threaded timer whose thread does not keep the JVM alive. */
    private static ScheduledExecutorService timer(String name) {
        return Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, name);
            t.setDaemon(true);
            return t;
        });
    }

    /** The timer's last checkpoint failure, logged once however many ticks meet it again. Timer thread only. */
    private static String lastCheckpointFailure;

    private static void checkpoint(VmFuseFs fs) {
        try {
            fs.checkpointJournals();
            if (lastCheckpointFailure != null) {
                log.info("journal checkpoint succeeded again");
                lastCheckpointFailure = null;
            }
        } catch (FsException e) {
            if (!e.getMessage().equals(lastCheckpointFailure)) { // a broken store fails every tick the same way
                log.error("journal checkpoint failed: {}", e.getMessage());
            }
            lastCheckpointFailure = e.getMessage();
        }
    }

    /**
     * Says how this unmount went, for vmfuse umount (which waits for this process, and cannot see
     * its exit status): what was written through the mount is on stable storage, or what failed.
     */
    private static void recordUnmount(StoreDir store, long pid, List<String> failed) {
        String line = pid + "\t" + (failed.isEmpty() ? "ok" : "failed\t" + TsvField.escape(String.join("; ", failed)));
        try {
            store.disk().replace(store.unmountRecord(), (line + "\n").getBytes(StandardCharsets.UTF_8));
        } catch (IOException e) {
            log.error("cannot record how the unmount went in {}: {}", store.unmountRecord(), e.getMessage());
        }
    }

    private static void save(ReleaseLedger ledger, boolean durable) {
        try {
            ledger.save(durable);
        } catch (IOException e) {
            log.error("cannot save release counts: {}", e.getMessage());
        }
    }
}
