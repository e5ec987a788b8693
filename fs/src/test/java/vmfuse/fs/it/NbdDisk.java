package vmfuse.fs.it;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;

/**
 * A disk for a store made of real parts, since this kernel has no device-mapper (FACTS.md):
 * nbdkit's file plugin over an image file, behind nbdkit's error filter, made a file by nbdfuse,
 * a block device by a loop device, with ext4 on it mounted at the store's directory.
 *
 * <ul>
 *   <li>{@link #failing(boolean)}: every write and flush of the disk fails with EIO while true, as
 *       a dying disk's do (the error filter's trigger file);
 *   <li>{@link #stalled(boolean)}: nbdkit is stopped (SIGSTOP): every I/O that reaches the disk
 *       waits until it is continued, as on a disk that hangs;
 *   <li>{@link #cut()}: nbdkit is killed: what the kernel has not yet written to the disk (dirty
 *       pages, ext4's running transaction) never reaches it, as at a power cut; what nbdkit took
 *       is in the image file. Then {@link #attachAgain()} mounts what the image file holds, after
 *       e2fsck, as the host does when it comes back.
 * </ul>
 * ext4 is mounted with commit=60, so that only what is synced is committed within a test's
 * seconds: a missing fsync shows as a loss, not hidden by the 5 s journal commit.
 */
final class NbdDisk implements AutoCloseable {
    private final Path work;
    private final Path mountPoint;
    private final Path image;
    private final Path socket;
    private final Path fuseDir;
    private final Path trigger;
    private Proc.Background nbdkit;
    private Proc.Background nbdfuse;
    private String loop;
    /** nbdkit's delay filter on every read (e.g. "2ms"), or null: a disk slow to read. */
    private String readDelay;

    private NbdDisk(Path work, Path mountPoint) {
        this.work = work;
        this.mountPoint = mountPoint;
        this.image = work.resolve("disk.img");
        this.socket = work.resolve("nbd.sock");
        this.fuseDir = work.resolve("fuse");
        this.trigger = work.resolve("fail");
    }

    /** A new disk of {@code size} (e.g. "256M"), ext4, mounted at {@code mountPoint}. */
    static NbdDisk create(Path mountPoint, String size) throws IOException {
        return create(mountPoint, size, null);
    }

    /** As {@link #create(Path, String)}, every read of the disk taking {@code readDelay} (e.g. "2ms") more. */
    static NbdDisk create(Path mountPoint, String size, String readDelay) throws IOException {
        NbdDisk d = new NbdDisk(Files.createTempDirectory(Path.of("/tmp"), "vmfuse-nbd-"), mountPoint);
        d.readDelay = readDelay;
        try {
            Proc.ok("truncate", "-s", size, d.image.toString());
            d.attachThroughNbd();
            Proc.ok("mkfs.ext4", "-q", d.loop);
            d.mountExt4();
            return d;
        } catch (RuntimeException | Error | IOException e) {
            d.close();
            throw e;
        }
    }

    private void attachThroughNbd() throws IOException {
        Files.createDirectories(fuseDir);
        List<String> cmd = new ArrayList<>(List.of("nbdkit", "-f", "-U", socket.toString(), "--filter=error"));
        if (readDelay != null) {
            cmd.add("--filter=delay");
        }
        cmd.addAll(List.of("file", image.toString(), "error=EIO", "error-rate=100%", "error-file=" + trigger));
        if (readDelay != null) {
            cmd.add("delay-read=" + readDelay);
        }
        nbdkit = Proc.start(cmd.toArray(String[]::new));
        waitFor(socket, "nbdkit's socket");
        nbdfuse = Proc.start("nbdfuse", fuseDir.toString(), "--unix", socket.toString());
        waitFor(fuseDir.resolve("nbd"), "nbdfuse's file");
        loop = Proc.ok("losetup", "-f", "--show", fuseDir.resolve("nbd").toString()).out().trim();
    }

    private void mountExt4() {
        Proc.ok("mount", "-o", "commit=60", loop, mountPoint.toString());
    }

    private static void waitFor(Path p, String what) {
        for (int i = 0; i < 200 && !Files.exists(p); i++) { // 10 s at most
            try {
                Thread.sleep(50);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new AssertionError("interrupted waiting for " + what);
            }
        }
        if (!Files.exists(p)) {
            throw new AssertionError(what + " did not appear: " + p);
        }
    }

    /** While true, every write and flush to the disk fails with EIO. */
    void failing(boolean fail) throws IOException {
        if (fail) {
            Files.writeString(trigger, "");
        } else {
            Files.deleteIfExists(trigger);
        }
    }

    /** While true, nbdkit is stopped: every request that reaches the disk waits. */
    void stalled(boolean stall) {
        Proc.ok("kill", stall ? "-STOP" : "-CONT", String.valueOf(nbdkit.process.pid()));
    }

    /** The power goes: nbdkit dies with whatever the kernel has not written yet; everything above is let go. */
    void cut() {
        nbdkit.close();
        detach();
    }

    /** After a cut: the image file attached directly, checked (e2fsck -fy) and mounted again. */
    void attachAgain() {
        loop = Proc.ok("losetup", "-f", "--show", image.toString()).out().trim();
        Proc.Result fsck = Proc.run("e2fsck", "-fy", loop);
        if (fsck.exit() > 1) {
            throw new AssertionError("e2fsck could not repair the store's filesystem:\n" + fsck.describe());
        }
        mountExt4();
    }

    /** The store's filesystem as the test last left it unmounted, its loop device and nbdfuse let go. */
    private void detach() {
        Proc.run("umount", "-l", mountPoint.toString());
        if (loop != null) {
            Proc.run("losetup", "-d", loop);
            loop = null;
        }
        Proc.run("fusermount3", "-u", "-z", fuseDir.toString());
        if (nbdfuse != null) {
            nbdfuse.close();
            nbdfuse = null;
        }
    }

    @Override
    public void close() throws IOException {
        if (nbdkit != null) {
            Proc.run("kill", "-CONT", String.valueOf(nbdkit.process.pid()));
        }
        detach();
        if (nbdkit != null) {
            nbdkit.close();
        }
        try (Stream<Path> all = Files.walk(work)) {
            for (Path p : all.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
