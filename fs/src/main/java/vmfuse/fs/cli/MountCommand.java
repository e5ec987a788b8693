package vmfuse.fs.cli;

import java.io.File;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import vmfuse.fs.FsException;
import vmfuse.fs.daemon.Daemon;
import vmfuse.fs.daemon.StoreDir;
import vmfuse.fs.mount.MountTable;
import vmfuse.fs.nativeio.Native;
import vmfuse.nbd.NbdServer;

@Command(name = "mount", mixinStandardHelpOptions = true,
        description = {
            "Mount the store DIR at MOUNTPOINT: images/ shows DIR/images, journals/ the journal devices.",
            "Without -f, returns once the mount is live; the daemon keeps running and logs to DIR/vmfuse.log."},
        footer = {"", "Examples:",
            "  vmfuse mount --store /var/lib/vmfuse /srv/vmfuse",
            "  vmfuse mount -f --store ./var/store ./var/mnt -o max_read=131072"})
final class MountCommand implements Callable<Integer> {
    private static final long READY_TIMEOUT_SECONDS = 60;

    @Option(names = "--store", required = true, paramLabel = "DIR",
            description = "The store directory (must exist and be writable). DIR/images is created if absent.")
    Path store;

    @Parameters(index = "0", paramLabel = "MOUNTPOINT", description = "An empty directory.")
    Path mountPoint;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Option(names = {"-f", "--foreground"}, description = "Stay in the foreground and log to stderr.")
    boolean foreground;

    @Option(names = "-o", paramLabel = "OPTIONS", split = ",",
            description = "Extra FUSE mount options, comma-separated (after the defaults: "
                    + "big_writes,max_write=131072,splice_write,splice_move,allow_other,default_permissions,no_remote_lock).")
    List<String> fuseOptions = new ArrayList<>();

    @Option(names = "--threads", paramLabel = "N", description = "Threads serving FUSE requests (default: "
            + Daemon.DEFAULT_THREADS + ").")
    int threads = Daemon.DEFAULT_THREADS;

    @Option(names = "--io-workers", paramLabel = "N", description = {"Threads doing the NBD door's requests, "
            + "in the order the scheduler decides: at most N requests at the disk at once (default: "
            + Daemon.DEFAULT_IO_WORKERS + "). Fewer: the scheduler decides more of the order (weights, "
            + "reservations); more: a disk with a deep queue is kept busier."})
    int ioWorkers = Daemon.DEFAULT_IO_WORKERS;

    @Option(names = "--journal-durability", paramLabel = "MODE", defaultValue = "flush",
            description = "Durability of journal devices created through the file API: flush (default: data "
                    + "survive a crash once fsync returns) or close (memory speed; persisted on close, unmount "
                    + "and every " + Daemon.CHECKPOINT_SECONDS + " s).")
    String journalDurability;

    @Option(names = "--journal-memory", paramLabel = "SIZE", defaultValue = "128M",
            description = "Bound on journal blocks held in memory before a checkpoint writes them to the store "
                    + "(default: 128M; K, M, G suffixes). At the bound, journal writers wait for the checkpoint. "
                    + "The blocks are kept outside the Java heap, in direct memory, which the JVM caps at -Xmx: "
                    + "at most half of it (JAVA_OPTS=-Xmx...).")
    String journalMemory;

    @Option(names = "--reclaim-max-ranges", paramLabel = "N", defaultValue = "16384",
            description = {"Per VM the reclaimer serves: how many ranges its guest's writes and its waiting deletions may",
                "take (memory: about 100 bytes each). Past it, that VM's notices are refused (busy, the agent sends",
                "them again) and its writes are kept coarser (less is punched), never another VM's service",
                "(default: ${DEFAULT-VALUE})."})
    int reclaimMaxRanges;

    @Option(names = "--force", description = "Clear a stale mount (left by a daemon that died) at MOUNTPOINT first.")
    boolean force;

    @Option(names = "--nbd", paramLabel = "unix:PATH|tcp:HOST:PORT",
            description = {"Also serve the images and journal devices over NBD, named by their path in the mount",
                "(nbd+unix:///images/vm1.raw?socket=PATH): on a unix socket (mode 0666; root sees every volume,",
                "another user its exports' volumes: vmfuse export), and/or on TCP, where TLS with a pre-shared",
                "key is required (--tls-psk) and a client sees its key identity's exports. Given once or twice."})
    List<String> nbd = new ArrayList<>();

    @Option(names = "--nbd-poll", paramLabel = "MICROS",
            description = "How long an NBD client's thread busy-polls its socket for the next request before it "
                    + "sleeps (default: 50; 0: never; at most 1000). A client that sends its next request at once then "
                    + "pays no wake-up; the window shrinks for a client that does not, and at most half the CPUs poll.")
    int nbdPollMicros = (int) (NbdServer.Limits.DEFAULT_POLL.toNanos() / 1000);

    @Option(names = "--tls-psk", paramLabel = "FILE",
            description = {"The pre-shared keys of NBD over TCP: IDENTITY:HEXKEY lines, as QEMU's tls-creds-psk",
                "(keys.psk) and nbdkit's --tls-psk read them; mode 0600."})
    Path tlsPsk;

    @Option(names = "--metrics", paramLabel = "HOST:PORT",
            description = {"Serve Prometheus metrics at http://HOST:PORT/metrics (releases, images, journal",
                "devices' flushes and memory, checkpoints, the reclaimer's VMs, NBD requests by export and class,",
                "the JVM's), e.g. 127.0.0.1:9577. They name images, devices, VMs and exports, and need no",
                "password: listen where only the host's monitoring can reach. Port 0: any free port (logged)."})
    String metrics;

    /** HOST:PORT (an IPv6 host in brackets) of {@code option}, its port at least {@code minPort}. */
    private InetSocketAddress hostPort(String option, String prefix, String hp, int minPort) {
        int colon = hp.lastIndexOf(':');
        int port;
        try {
            port = Integer.parseInt(hp.substring(colon + 1));
        } catch (NumberFormatException | IndexOutOfBoundsException e) {
            port = -1;
        }
        if (colon <= 0 || port < minPort || port > 65535) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(),
                    option + " takes " + prefix + "HOST:PORT, not '" + prefix + hp + "'");
        }
        String host = hp.substring(0, colon);
        if (host.startsWith("[") && host.endsWith("]")) {
            host = host.substring(1, host.length() - 1);
        }
        InetSocketAddress a = new InetSocketAddress(host, port);
        if (a.isUnresolved()) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(),
                    option + " " + prefix + hp + ": no such host");
        }
        return a;
    }

    /** --metrics, or null. */
    private InetSocketAddress metricsAddress() {
        return metrics == null ? null : hostPort("--metrics", "", metrics, 0);
    }

    /** The NBD door of --nbd and --tls-psk, or null for none. */
    private Daemon.NbdOptions nbdOptions() {
        Path socket = null;
        InetSocketAddress tcp = null;
        for (String n : nbd) {
            if (n.startsWith("unix:") && n.length() > "unix:".length() && socket == null) {
                Path p = Path.of(n.substring("unix:".length()));
                if (!p.isAbsolute()) {
                    throw new picocli.CommandLine.ParameterException(spec.commandLine(),
                            "--nbd needs an absolute path, not " + p);
                }
                socket = p.normalize();
            } else if (n.startsWith("tcp:") && tcp == null) {
                tcp = hostPort("--nbd", "tcp:", n.substring("tcp:".length()), 1);
            } else {
                throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--nbd takes unix:PATH or "
                        + "tcp:HOST:PORT, each once, not '" + n + "'");
            }
        }
        if (tcp != null && tlsPsk == null) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(),
                    "NBD over TCP requires TLS: give --tls-psk FILE (IDENTITY:HEXKEY lines)");
        }
        if (tlsPsk != null && tcp == null) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(),
                    "--tls-psk is for NBD over TCP: give --nbd tcp:HOST:PORT too");
        }
        long maxPoll = NbdServer.Limits.MAX_POLL.toNanos() / 1000;
        if (nbdPollMicros < 0 || nbdPollMicros > maxPoll) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(),
                    "--nbd-poll must be 0.." + maxPoll + " microseconds, not " + nbdPollMicros);
        }
        if (socket == null && tcp == null) {
            if (spec.commandLine().getParseResult().hasMatchedOption("--nbd-poll")) {
                throw new picocli.CommandLine.ParameterException(spec.commandLine(),
                        "--nbd-poll is for the NBD door: give --nbd unix:PATH or tcp:HOST:PORT too");
            }
            return null;
        }
        return new Daemon.NbdOptions(socket, tcp, tlsPsk == null ? null : tlsPsk.toAbsolutePath().normalize(),
                Duration.ofNanos(nbdPollMicros * 1000L));
    }

    @Override
    public Integer call() throws Exception {
        if (threads < 1 || threads > 256) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--threads must be 1..256, not " + threads);
        }
        if (ioWorkers < 1 || ioWorkers > 256) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(),
                    "--io-workers must be 1..256, not " + ioWorkers);
        }
        Path mnt = mountPoint.toAbsolutePath().normalize();
        long memory = journalMemory();
        if (reclaimMaxRanges < 16 || reclaimMaxRanges > 10_000_000) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--reclaim-max-ranges must be "
                    + "16..10000000, not " + reclaimMaxRanges);
        }
        if (foreground) {
            try {
                Daemon.run(new Daemon.Options(store, mnt, fuseOptions, force, threads, durability(), memory,
                    reclaimMaxRanges, nbdOptions(), ioWorkers, metricsAddress()));
            } catch (FsException e) {
                throw new FsException(e.errno(), "cannot mount " + mnt + ": " + e.getMessage());
            }
            return 0;
        }
        StoreDir s;
        try {
            s = Daemon.preflight(new Daemon.Options(store, mnt, fuseOptions, force, threads, durability(), memory,
                    reclaimMaxRanges, nbdOptions(), ioWorkers, metricsAddress()));
        } catch (FsException e) {
            throw new FsException(e.errno(), "cannot mount " + mnt + ": " + e.getMessage());
        }
        return startDaemon(s, mnt);
    }

    /**
     * --journal-memory: at least 4 MiB, at most half of -Xmx, which also caps the direct memory the
     * blocks are kept in (room is left for what writers add past the bound and for the store's buffers).
     */
    private long journalMemory() {
        long bytes;
        try {
            bytes = vmfuse.journal.ByteSize.parse(journalMemory);
        } catch (vmfuse.journal.StoreException e) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--journal-memory: " + e.getMessage());
        }
        long heap = Runtime.getRuntime().maxMemory();
        if (bytes < (4L << 20) || bytes > heap / 2) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--journal-memory must be between 4M and "
                    + "half the JVM's -Xmx (" + (heap / 2 >> 20) + "M now; raise it with JAVA_OPTS=-Xmx...), not "
                    + journalMemory);
        }
        return bytes;
    }

    private vmfuse.journal.Durability durability() throws FsException {
        try {
            return vmfuse.journal.Durability.parse(journalDurability);
        } catch (vmfuse.journal.StoreException e) {
            throw new FsException(e.errno(), e.getMessage());
        }
    }

    /** Starts the daemon in its own session and waits until its mount is live. */
    private int startDaemon(StoreDir s, Path mnt) throws Exception {
        List<String> cmd = new ArrayList<>();
        cmd.add("setsid");
        cmd.add(ProcessHandle.current().info().command().orElse("java"));
        cmd.addAll(java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments());
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        // the same command again, in the foreground: the class picocli runs (vmfuse's Main), with its --debug
        cmd.add(spec.root().userObject().getClass().getName());
        if (spec.root().commandLine().getParseResult().hasMatchedOption("--debug")
                || spec.commandLine().getParseResult().hasMatchedOption("--debug")) { // before or after "mount"
            cmd.add("--debug");
        }
        cmd.addAll(List.of("mount", "--foreground", "--store", s.dir().toString(), "--threads", String.valueOf(threads),
                "--io-workers", String.valueOf(ioWorkers),
                "--journal-durability", journalDurability, "--journal-memory", journalMemory,
                "--reclaim-max-ranges", String.valueOf(reclaimMaxRanges)));
        if (metrics != null) {
            cmd.addAll(List.of("--metrics", metrics));
        }
        Daemon.NbdOptions door = nbdOptions();
        if (door != null && door.socket() != null) {
            cmd.addAll(List.of("--nbd", "unix:" + door.socket()));
        }
        if (door != null && door.tcp() != null) {
            cmd.addAll(List.of("--nbd", "tcp:" + door.tcp().getHostString() + ":" + door.tcp().getPort(), "--tls-psk",
                    door.tlsPsk().toString()));
        }
        if (door != null) {
            cmd.addAll(List.of("--nbd-poll", String.valueOf(nbdPollMicros)));
        }
        for (String o : fuseOptions) {
            cmd.add("-o");
            cmd.add(o);
        }
        cmd.add(mnt.toString());

        File log = s.log().toFile();
        long logStart = log.length();
        Process child = new ProcessBuilder(cmd)
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log))
                .redirectErrorStream(true)
                .start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(READY_TIMEOUT_SECONDS);
        while (System.nanoTime() < deadline) {
            if (!child.isAlive()) {
                throw new FsException(Native.EIO, "daemon exited with status " + child.exitValue() + ": "
                        + reasonFromLog(log, logStart));
            }
            if (isLive(s, mnt, child.pid())) {
                return 0;
            }
            Thread.sleep(50);
        }
        child.destroyForcibly();
        throw new FsException(Native.EIO, "cannot mount " + mnt + ": not live after " + READY_TIMEOUT_SECONDS
                + " s; see " + log);
    }

    private static boolean isLive(StoreDir s, Path mnt, long pid) throws IOException {
        if (s.readPid().filter(d -> d.pid() == pid).isEmpty()) {
            return false;
        }
        Optional<MountTable.Entry> e = MountTable.at(mnt);
        return e.isPresent() && e.get().isVmfuse();
    }

    /** The daemon's own one-line reason ("vmfuse: ..."), from what it appended to the log. */
    private static String reasonFromLog(File log, long from) {
        try (RandomAccessFile f = new RandomAccessFile(log, "r")) {
            f.seek(from);
            byte[] b = new byte[(int) Math.min(f.length() - from, 64 * 1024)];
            f.readFully(b);
            String[] lines = new String(b, StandardCharsets.UTF_8).split("\n");
            for (int i = lines.length - 1; i >= 0; i--) {
                if (lines[i].startsWith("vmfuse: ")) {
                    return lines[i].substring("vmfuse: ".length());
                }
            }
            for (int i = lines.length - 1; i >= 0; i--) {
                if (lines[i].startsWith("fuse: ") || lines[i].contains(" ERROR ")) {
                    return lines[i];
                }
            }
            return "see " + log;
        } catch (IOException e) {
            return "see " + log;
        }
    }
}
