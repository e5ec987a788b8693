package vmfuse.fs.mount;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import vmfuse.fs.FsException;
import vmfuse.fs.nativeio.Native;

/** Unmounts through fusermount(1), bounded by a timeout and killed by its pid past it. */
public final class Fusermount {
    private static final long TIMEOUT_SECONDS = 30;

    private Fusermount() {}

    /** fusermount -u [-z] MNT; fails with fusermount's own one-line reason (e.g. "Device or resource busy"). */
    public static void unmount(Path mnt, boolean lazy) throws FsException {
        List<String> cmd = lazy ? List.of("fusermount", "-u", "-z", mnt.toString())
                : List.of("fusermount", "-u", mnt.toString());
        try {
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
            p.getOutputStream().close();
            if (!p.waitFor(TIMEOUT_SECONDS, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                throw new FsException(Native.EBUSY, "fusermount -u " + mnt + " did not finish in " + TIMEOUT_SECONDS + " s");
            }
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
            if (p.exitValue() != 0) {
                int errno = out.contains("busy") ? Native.EBUSY : Native.EIO;
                throw new FsException(errno, out.isEmpty() ? "fusermount -u failed" : out.replace('\n', ' '));
            }
        } catch (IOException e) {
            throw new FsException(Native.EIO, "cannot run fusermount: " + e.getMessage());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new FsException(Native.EIO, "interrupted while unmounting " + mnt);
        }
    }
}
