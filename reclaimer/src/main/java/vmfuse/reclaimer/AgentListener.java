package vmfuse.reclaimer;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.GroupPrincipal;
import java.nio.file.attribute.PosixFileAttributeView;
import java.nio.file.attribute.PosixFilePermissions;
import java.nio.file.attribute.UserPrincipal;

import jdk.net.ExtendedSocketOptions;
import jdk.net.UnixDomainPrincipal;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import vmfuse.nbd.SocketPath;

/**
 * Listens on one VM's agent socket (QEMU's `-chardev socket,path=...` connects to it) and serves
 * one connection at a time with an {@link AgentSession}. Lines are read with a bound; a line past
 * the bound is answered with an error and skipped.
 */
public final class AgentListener implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(AgentListener.class);

    private final Path path;
    private final ServerSocketChannel server;
    private final AgentAccess access;
    private final UserPrincipal user;
    private final UserPrincipal root;
    private final GroupPrincipal group;
    private final Thread thread;
    private volatile SocketChannel current;
    private volatile boolean closed;

    private AgentListener(Path path, ServerSocketChannel server, AgentAccess access, AgentSession.Host host, String vm)
            throws IOException {
        this.path = path;
        this.server = server;
        this.access = access;
        this.user = access.userPrincipal();
        this.root = AgentAccess.ROOT.userPrincipal();
        this.group = access.groupPrincipal();
        this.thread = new Thread(() -> serve(host, vm), "agent-" + vm);
        this.thread.setDaemon(true);
    }

    /** Listens at {@code path} (a stale socket file there is replaced) for {@code vm}'s agent, as root's. */
    public static AgentListener start(Path path, AgentSession.Host host, String vm) throws IOException {
        return start(path, AgentAccess.ROOT, host, vm);
    }

    /**
     * Listens at {@code path} for {@code vm}'s agent, reachable by {@code access} only. The socket
     * is bound under a temporary name, given its owner and mode, and only then renamed to
     * {@code path}: bind creates it with the umask's mode, and nobody may connect meanwhile.
     */
    public static AgentListener start(Path path, AgentAccess access, AgentSession.Host host, String vm)
            throws IOException {
        Files.createDirectories(path.toAbsolutePath().getParent());
        SocketPath.clear(path); // a socket left by a daemon that died goes; anything else stays, and fails this
        Path bound = path.resolveSibling("." + path.getFileName() + ".binding");
        Files.deleteIfExists(bound);
        ServerSocketChannel s = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            s.bind(UnixDomainSocketAddress.of(bound));
            PosixFileAttributeView attrs = Files.getFileAttributeView(bound, PosixFileAttributeView.class);
            attrs.setPermissions(PosixFilePermissions.fromString(access.group() == null ? "rw-------" : "rw-rw----"));
            attrs.setOwner(access.userPrincipal());
            if (access.group() != null) {
                attrs.setGroup(access.groupPrincipal());
            }
            SocketPath.install(bound, path);
            AgentListener l = new AgentListener(path, s, access, host, vm);
            l.thread.start();
            return l;
        } catch (IOException | RuntimeException e) {
            s.close();
            Files.deleteIfExists(bound);
            throw new IOException("cannot listen on agent socket " + path + " for " + access + ": " + e.getMessage(), e);
        }
    }

    /** Whether the peer may speak for this VM: its QEMU's user, a member of the named group, or root. */
    private boolean allowed(SocketChannel c, String vm) throws IOException {
        UnixDomainPrincipal peer = c.getOption(ExtendedSocketOptions.SO_PEERCRED);
        if (peer.user().equals(user) || peer.user().equals(root) || (group != null && peer.group().equals(group))) {
            return true;
        }
        log.warn("agent connection vm={} socket={} refused: the peer runs as {}:{}, the socket is {}'s", vm, path,
                peer.user().getName(), peer.group().getName(), access);
        return false;
    }

    private void serve(AgentSession.Host host, String vm) {
        while (!closed) {
            try (SocketChannel c = server.accept()) {
                if (!allowed(c, vm)) {
                    continue;
                }
                current = c;
                log.info("agent connected vm={} socket={}", vm, path);
                converse(c, new AgentSession(host));
                log.info("agent disconnected vm={}", vm);
            } catch (IOException e) {
                if (!closed) {
                    log.warn("agent connection vm={} failed: {}", vm, e.getMessage());
                }
            }
        }
    }

    private static void converse(SocketChannel c, AgentSession session) throws IOException {
        ByteBuffer in = ByteBuffer.allocate(AgentSession.MAX_LINE);
        boolean skipping = false;
        while (!session.closed()) {
            if (c.read(in) < 0) {
                return;
            }
            in.flip();
            int start = 0;
            for (int i = in.position(); i < in.limit(); i++) {
                if (in.get(i) == '\n') {
                    String line = new String(in.array(), start, i - start, StandardCharsets.US_ASCII);
                    if (line.endsWith("\r")) {
                        line = line.substring(0, line.length() - 1);
                    }
                    String answer = skipping ? session.lineTooLong() : session.handle(line);
                    skipping = false;
                    ByteBuffer out = ByteBuffer.wrap((answer + "\n").getBytes(StandardCharsets.US_ASCII));
                    while (out.hasRemaining()) {
                        c.write(out);
                    }
                    start = i + 1;
                    if (session.closed()) {
                        return;
                    }
                }
            }
            in.position(start);
            in.compact();
            if (!in.hasRemaining()) { // a line past the bound: drop what we have, answer at its end
                in.clear();
                skipping = true;
            }
        }
    }

    @Override
    public void close() throws IOException {
        closed = true;
        server.close();
        SocketChannel c = current;
        if (c != null) {
            c.close();
        }
        try {
            thread.join(5000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        Files.deleteIfExists(path);
    }
}
