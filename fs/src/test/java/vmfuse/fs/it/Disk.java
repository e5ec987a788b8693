package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HexFormat;

import jnr.ffi.Memory;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import vmfuse.fs.nativeio.LibC;

/** What a user checks on the host: allocated blocks, free space, checksums; and small tmpfs stores. */
final class Disk {
    private Disk() {}

    /** st_blocks * 512 of a file (not following symlinks). */
    static long allocated(Path file) {
        Pointer st = Memory.allocate(Runtime.getSystemRuntime(), 256);
        int rc = LibC.INSTANCE.fstatat(-100, file.toString(), st, 0x100);
        assertEquals(0, rc, "stat " + file);
        return st.getLong(64) * 512;
    }

    /** Bytes free for unprivileged users on the filesystem holding {@code p}. */
    static long free(Path p) {
        try {
            return Files.getFileStore(p).getUsableSpace();
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    static String sha256(Path file) throws Exception {
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        try (InputStream in = Files.newInputStream(file)) {
            byte[] buf = new byte[1 << 20];
            int n;
            while ((n = in.read(buf)) > 0) {
                md.update(buf, 0, n);
            }
        }
        return HexFormat.of().formatHex(md.digest());
    }

    /**
     * Writes {@code len} random bytes of seed {@code seed} at {@code off} of {@code p} and
     * fdatasyncs. The output is their sha256, printed before the write, so it is there also when
     * the write or the fdatasync fails (the exit status says which).
     */
    static Proc.Result writeAndSync(Path p, long off, int len, int seed) {
        return Proc.run("python3", "-c", String.join("\n",
                "import os, sys, random, hashlib",
                "random.seed(int(sys.argv[4]))",
                "data = random.randbytes(int(sys.argv[3]))",
                "print(hashlib.sha256(data).hexdigest(), flush=True)",
                "fd = os.open(sys.argv[1], os.O_WRONLY)",
                "os.pwrite(fd, data, int(sys.argv[2]))",
                "os.fdatasync(fd)"),
                p.toString(), String.valueOf(off), String.valueOf(len), String.valueOf(seed));
    }

    /** The sha256 of [off, off + len) of {@code p}, read through the file API. */
    static String readSha(Path p, long off, int len) {
        return Proc.ok("python3", "-c", String.join("\n",
                "import os, sys, hashlib",
                "fd = os.open(sys.argv[1], os.O_RDONLY)",
                "print(hashlib.sha256(os.pread(fd, int(sys.argv[3]), int(sys.argv[2]))).hexdigest())"),
                p.toString(), String.valueOf(off), String.valueOf(len)).out().trim();
    }

    /** Mounts a tmpfs of {@code size} (e.g. "64m") at {@code dir}, with extra mount options. */
    static void tmpfs(Path dir, String size, String... extra) throws IOException {
        Files.createDirectories(dir);
        String opts = "size=" + size + (extra.length > 0 ? "," + String.join(",", extra) : "");
        Proc.ok("mount", "-t", "tmpfs", "-o", opts, "vmfuse-test", dir.toString());
    }

    static void umount(Path dir) {
        Proc.run("umount", "-l", dir.toString());
    }

    /**
     * e2fsck -fn on the host of ext4 on {@code data} with its external journal on {@code journal}
     * (files, through loop devices, let go after); fails with e2fsck's output unless clean.
     */
    static void fsckExternal(Path journal, Path data) {
        java.util.List<String> loops = new java.util.ArrayList<>();
        try {
            String jl = Proc.ok("losetup", "-f", "--show", journal.toString()).out().trim();
            loops.add(jl);
            String dl = Proc.ok("losetup", "-f", "--show", data.toString()).out().trim();
            loops.add(dl);
            Proc.ok("e2fsck", "-fn", "-j", jl, dl);
        } finally {
            loops.forEach(l -> Proc.run("losetup", "-d", l));
        }
    }
}
