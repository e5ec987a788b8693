package vmfuse.fs.daemon;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Optional;

import vmfuse.durable.Disk;
import vmfuse.durable.RealDisk;
import vmfuse.fs.FsException;
import vmfuse.fs.nativeio.Native;
import vmfuse.fs.space.HolePuncher;

/**
 * The layout of a store directory, in one place:
 * <pre>
 *   STORE/images/        the backing files of the images (passthrough)
 *   STORE/vmfuse.log     the daemon's log
 *   STORE/vmfuse.lock    held (flock) by the one daemon serving this store
 *   STORE/vmfuse.pid     "PID MOUNTPOINT" of that daemon, once its mount is live
 *   STORE/vmfuse.unmounted  how the last daemon's unmount went: "PID ok", or "PID failed WHAT"
 *   STORE/vmfuse.sock    its control socket (status)
 *   STORE/releases.tsv   counts of released bytes per image
 *   STORE/journals.db    the journal devices (MapDB record store; journals.db.commit during a commit)
 *   STORE/journals.db.redo.{0,1}  the redo log of journal devices in flush mode
 *   STORE/vms.tsv        the VMs the reclaimer serves (vmfuse vm add)
 *   STORE/reclaim/VM.notices  each VM's durable log of deletion notices
 * </pre>
 */
public record StoreDir(Path dir) {
    /** The one way the daemon writes its durable files (the journal store punches freed pages). */
    private static final Disk DISK = RealDisk.of(HolePuncher::punchStoreFile);

    /** What every durable file of the store is written through. */
    public Disk disk() {
        return DISK;
    }

    public Path images() {
        return dir.resolve("images");
    }

    public Path log() {
        return dir.resolve("vmfuse.log");
    }

    public Path lockFile() {
        return dir.resolve("vmfuse.lock");
    }

    public Path pidFile() {
        return dir.resolve("vmfuse.pid");
    }

    /** What the pid file says: the daemon serving the store, and where its mount is. */
    public record PidFile(long pid, Path mountPoint) {}

    /**
     * Writes the pid file (the daemon, once its mount is live): {@code PID<TAB>MOUNTPOINT}, through
     * the store's one writer: replaced whole (a reader never sees half of it), not forced (after a
     * crash a stale one names a process that is gone, and its readers check that).
     */
    public void writePid(long pid, Path mountPoint) throws IOException {
        disk().replace(pidFile(), (pid + "\t" + mountPoint + "\n").getBytes(StandardCharsets.UTF_8), false);
    }

    /** The pid file's daemon, or nothing if there is none (or it cannot be read). */
    public Optional<PidFile> readPid() {
        try {
            String[] f = Files.readString(pidFile(), StandardCharsets.UTF_8).trim().split("\t", 2);
            return Optional.of(new PidFile(Long.parseLong(f[0]), f.length > 1 ? Path.of(f[1]) : null));
        } catch (IOException | RuntimeException e) {
            return Optional.empty();
        }
    }

    /** How the last daemon's unmount went (read by vmfuse umount once the daemon has exited). */
    public Path unmountRecord() {
        return dir.resolve("vmfuse.unmounted");
    }

    public Path journals() {
        return dir.resolve("journals.db");
    }

    public Path vms() {
        return dir.resolve("vms.tsv");
    }

    /** The NBD door's exports (vmfuse export add). */
    public Path exports() {
        return dir.resolve("exports.tsv");
    }

    public Path reclaimDir() {
        return dir.resolve("reclaim");
    }

    public Path ledger() {
        return dir.resolve("releases.tsv");
    }

    /**
     * The control socket. A unix socket path must fit in 108 bytes; a store deeper than that
     * gets its socket under /run/vmfuse, named by a hash of the store path.
     */
    public Path socket() {
        Path p = dir.resolve("vmfuse.sock");
        if (p.toString().getBytes(StandardCharsets.UTF_8).length < 100) {
            return p;
        }
        try {
            byte[] h = MessageDigest.getInstance("SHA-256").digest(dir.toString().getBytes(StandardCharsets.UTF_8));
            return Path.of("/run/vmfuse", HexFormat.of().formatHex(h, 0, 12) + ".sock");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * Opens a store for a daemon: the directory must exist, be a directory and be writable (tried
     * by creating a file, so a read-only filesystem is caught even for root); images/ is made if
     * absent. The path must not hold ',' or a backslash, which libfuse's option parser would split.
     */
    public static StoreDir open(Path dir) throws FsException {
        Path abs = dir.toAbsolutePath().normalize();
        String s = abs.toString();
        if (s.indexOf(',') >= 0 || s.indexOf('\\') >= 0 || s.indexOf('\n') >= 0) {
            throw new FsException(Native.EINVAL, "store path may not contain ',', '\\' or a newline: " + s);
        }
        if (!Files.exists(abs)) {
            throw new FsException(Native.ENOENT, "store " + s + " does not exist (create it with: mkdir -p " + s + ")");
        }
        if (!Files.isDirectory(abs)) {
            throw new FsException(Native.ENOTDIR, "store " + s + " is not a directory");
        }
        Path probe = abs.resolve(".vmfuse-write-test");
        try {
            Files.deleteIfExists(probe);
            Files.createFile(probe);
            Files.delete(probe);
        } catch (IOException e) {
            throw new FsException(Native.EACCES, "store " + s + " is not writable: " + reason(e));
        }
        StoreDir store = new StoreDir(abs);
        try {
            Files.createDirectories(store.images());
        } catch (IOException e) {
            throw new FsException(Native.EIO, "cannot create " + store.images() + ": " + reason(e));
        }
        if (!Files.isDirectory(store.images(), java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
            throw new FsException(Native.ENOTDIR, store.images() + " is not a directory");
        }
        return store;
    }

    /** The short reason of an I/O exception: "Read-only file system", not a class name. */
    public static String reason(IOException e) {
        String m = e.getMessage();
        if (e instanceof java.nio.file.FileSystemException fse && fse.getReason() != null) {
            return fse.getReason();
        }
        return m != null ? m : e.getClass().getSimpleName();
    }
}
