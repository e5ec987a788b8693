package vmfuse.nbd;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * An NBD server on a unix socket: each client on a thread of its own ({@link Connection}), at
 * most {@code maxClients} at once (one more is hung up on at once, with a log line), each with a
 * bounded buffer, so a client costs the others nothing but its share of the disk.
 */
public final class NbdServer implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(NbdServer.class);

    private final Path socket;
    private final ServerSocketChannel server;
    private final Exports exports;
    private final int maxClients;
    private final Set<SocketChannel> clients = ConcurrentHashMap.newKeySet();
    private final Set<Thread> threads = ConcurrentHashMap.newKeySet();
    private final AtomicLong accepted = new AtomicLong();
    private final Thread acceptor;
    private volatile boolean closed;

    private NbdServer(Path socket, ServerSocketChannel server, Exports exports, int maxClients) {
        this.socket = socket;
        this.server = server;
        this.exports = exports;
        this.maxClients = maxClients;
        this.acceptor = new Thread(this::accept, "nbd-accept");
        this.acceptor.setDaemon(true);
    }

    /**
     * Listens on unix socket {@code socket} (a stale socket file there is replaced; mode 0600 until
     * tenants come: root's clients only) and serves {@code exports}.
     */
    public static NbdServer listen(Path socket, Exports exports, int maxClients) throws IOException {
        if (Files.exists(socket, LinkOption.NOFOLLOW_LINKS)) {
            BasicFileAttributes a = Files.readAttributes(socket, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
            if (!a.isOther()) { // a socket is neither a regular file, a directory nor a link
                throw new IOException(socket + " exists and is not a socket");
            }
            Files.delete(socket);
        }
        Path tmp = socket.resolveSibling("." + socket.getFileName() + ".binding");
        Files.deleteIfExists(tmp);
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            server.bind(UnixDomainSocketAddress.of(tmp));
            Files.setPosixFilePermissions(tmp, PosixFilePermissions.fromString("rw-------"));
            Files.move(tmp, socket, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException | RuntimeException e) {
            server.close();
            Files.deleteIfExists(tmp);
            throw e;
        }
        NbdServer s = new NbdServer(socket, server, exports, maxClients);
        s.acceptor.start();
        log.info("nbd listening socket={} max_clients={}", socket, maxClients);
        return s;
    }

    public Path socket() {
        return socket;
    }

    /** Clients connected now. */
    public int clients() {
        return clients.size();
    }

    private void accept() {
        while (!closed) {
            SocketChannel ch;
            try {
                ch = server.accept();
            } catch (ClosedChannelException e) {
                return;
            } catch (IOException e) {
                if (!closed) {
                    log.error("nbd socket={} accept failed: {}", socket, e.toString());
                }
                return;
            }
            long n = accepted.incrementAndGet();
            String peer = "unix#" + n;
            if (clients.size() >= maxClients) {
                log.warn("nbd client={} refused: {} clients already", peer, maxClients);
                close(ch);
                continue;
            }
            clients.add(ch);
            Thread t = new Thread(() -> {
                try {
                    new Connection(ch, exports, peer).run();
                } finally {
                    clients.remove(ch);
                    threads.remove(Thread.currentThread());
                }
            }, "nbd-" + n);
            t.setDaemon(true);
            threads.add(t);
            t.start();
        }
    }

    private static void close(SocketChannel ch) {
        try {
            ch.close();
        } catch (IOException ignored) {
            // closing a socket
        }
    }

    /**
     * Stops listening, hangs up on every client, and waits (up to 30 s) for their threads to end:
     * a request in flight finishes on the disk, then finds its socket closed, and its export is
     * closed before this returns, so nothing of a client's outlives the server.
     */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            server.close();
        } catch (IOException e) {
            log.warn("nbd socket={} close: {}", socket, e.toString());
        }
        clients.forEach(NbdServer::close);
        try {
            acceptor.join(5000);
            long deadline = System.nanoTime() + 30_000_000_000L;
            for (Thread t : threads) {
                t.join(Math.max(1, (deadline - System.nanoTime()) / 1_000_000));
                if (t.isAlive()) {
                    log.warn("nbd client thread {} still in a request after 30 s; unmounting without it", t.getName());
                }
            }
            Files.deleteIfExists(socket);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (IOException e) {
            log.warn("nbd socket={} not removed: {}", socket, e.toString());
        }
        log.info("nbd closed socket={}", socket);
    }
}
