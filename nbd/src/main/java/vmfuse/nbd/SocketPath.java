package vmfuse.nbd;

import java.io.IOException;
import java.net.ConnectException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

/**
 * The path a server's unix socket goes to, taken only from nobody: a socket nobody listens on
 * (left by a process that died) is replaced, but a socket another process serves (another daemon
 * given the same path: taking it would send that daemon's clients to this one, and leave it
 * without its socket) or anything that is not a socket (a file given by mistake, perhaps a VM's
 * image) is refused, and left as it is.
 */
public final class SocketPath {
    private static final int S_IFMT = 0170000;
    private static final int S_IFSOCK = 0140000;

    private SocketPath() {}

    /** Removes a stale socket at {@code path}; fails, naming the reason, if anything else is there. */
    public static void clear(Path path) throws IOException {
        int mode;
        try {
            mode = (Integer) Files.getAttribute(path, "unix:mode", LinkOption.NOFOLLOW_LINKS);
        } catch (NoSuchFileException e) {
            return;
        }
        if ((mode & S_IFMT) != S_IFSOCK) {
            throw new IOException(path + " exists and is not a socket (it is left as it is)");
        }
        try (SocketChannel probe = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            probe.configureBlocking(false); // a listener that does not accept, its backlog full, holds no mount up
            probe.connect(UnixDomainSocketAddress.of(path)); // connected, or pending: somebody listens
        } catch (ConnectException stale) { // ECONNREFUSED: nobody listens, a process that died left it
            Files.deleteIfExists(path);
            return;
        } catch (IOException e) {
            throw new IOException(path + " is in use, or cannot be probed: " + e.getMessage(), e);
        }
        throw new IOException(path + " is in use: another process listens on it (two daemons given one path?)");
    }

    /**
     * Puts the socket bound at {@code bound} (a temporary name beside it, given its owner and
     * mode first) at {@code path}, only if nothing is there: a process that took the path since
     * {@link #clear} keeps it. The temporary name is gone either way.
     */
    public static void install(Path bound, Path path) throws IOException {
        try {
            Files.createLink(path, bound);
        } catch (FileAlreadyExistsException e) {
            throw new IOException(path + " was taken by another process meanwhile", e);
        } finally {
            Files.deleteIfExists(bound);
        }
    }
}
