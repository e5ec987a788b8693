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

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Listens on one VM's agent socket (QEMU's `-chardev socket,path=...` connects to it) and serves
 * one connection at a time with an {@link AgentSession}. Lines are read with a bound; a line past
 * the bound is answered with an error and skipped.
 */
public final class AgentListener implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(AgentListener.class);

    private final Path path;
    private final ServerSocketChannel server;
    private final Thread thread;
    private volatile SocketChannel current;
    private volatile boolean closed;

    private AgentListener(Path path, ServerSocketChannel server, AgentSession.Host host, String vm) {
        this.path = path;
        this.server = server;
        this.thread = new Thread(() -> serve(host, vm), "agent-" + vm);
        this.thread.setDaemon(true);
    }

    /** Listens at {@code path} (a stale socket file there is replaced) for {@code vm}'s agent. */
    public static AgentListener start(Path path, AgentSession.Host host, String vm) throws IOException {
        Files.createDirectories(path.toAbsolutePath().getParent());
        if (Files.exists(path) && !Files.isDirectory(path) && !Files.isRegularFile(path)) {
            Files.delete(path); // a socket left by a daemon that died
        }
        ServerSocketChannel s = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            s.bind(UnixDomainSocketAddress.of(path));
        } catch (IOException e) {
            s.close();
            throw new IOException("cannot listen on agent socket " + path + ": " + e.getMessage(), e);
        }
        AgentListener l = new AgentListener(path, s, host, vm);
        l.thread.start();
        return l;
    }

    private void serve(AgentSession.Host host, String vm) {
        while (!closed) {
            try (SocketChannel c = server.accept()) {
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
