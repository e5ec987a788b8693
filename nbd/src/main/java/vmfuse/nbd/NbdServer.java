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
import java.nio.file.attribute.UserPrincipal;
import java.time.Duration;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

import jdk.net.ExtendedSocketOptions;
import jdk.net.UnixDomainPrincipal;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * An NBD server on a unix socket: each client read on a thread of its own ({@link Connection}),
 * its requests done by the {@link Scheduler}'s workers, at most {@code maxClients} at once (one
 * more is hung up on at once, with a log line), their data in {@link Buffers} of a bounded budget,
 * so a client costs the others nothing but its share of the disk. A watchdog hangs up on clients
 * stuck in their handshake or not reading their replies.
 */
public final class NbdServer implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(NbdServer.class);

    private final Path socket;
    private final ServerSocketChannel server;
    private final Exports exports;
    private final Limits limits;
    /** All clients' request data together, at most. */
    static final long BUFFER_BUDGET = 64 << 20;

    private final Scheduler scheduler;
    private final Buffers buffers = new Buffers(BUFFER_BUDGET);
    private final Set<Connection> clients = ConcurrentHashMap.newKeySet();
    private final Set<Thread> threads = ConcurrentHashMap.newKeySet();
    private final AtomicLong accepted = new AtomicLong();
    private final Thread acceptor;
    private final Thread watchdog;
    private volatile boolean closed;

    /**
     * What one client may take: {@code maxClients} connected at once; {@code handshake}, the time
     * from connecting to choosing an export; {@code unreadReply}, how long one reply may wait for
     * the client to read it.
     */
    public record Limits(int maxClients, int maxPerUser, Duration handshake, Duration unreadReply) {
        public Limits {
            if (maxClients < 1 || maxPerUser < 1 || handshake.isNegative() || unreadReply.isNegative()) {
                throw new IllegalArgumentException("limits " + maxClients + " " + maxPerUser + " " + handshake + " "
                        + unreadReply);
            }
        }

        /** {@code maxClients}, a quarter of them per user, 30 s for a handshake, 60 s for a reply to be read. */
        public static Limits of(int maxClients) {
            return new Limits(maxClients, Math.max(1, maxClients / 4), Duration.ofSeconds(30), Duration.ofSeconds(60));
        }
    }

    private NbdServer(Path socket, ServerSocketChannel server, Exports exports, Limits limits, Scheduler scheduler) {
        this.socket = socket;
        this.server = server;
        this.exports = exports;
        this.limits = limits;
        this.scheduler = scheduler;
        this.acceptor = new Thread(this::accept, "nbd-accept");
        this.acceptor.setDaemon(true);
        this.watchdog = new Thread(this::watch, "nbd-watchdog");
        this.watchdog.setDaemon(true);
    }

    /**
     * Listens on unix socket {@code socket} (a stale socket file there is replaced; mode 0666: what
     * a client may see is decided by its user, {@link Exports}) and serves {@code exports}, their
     * requests done by
     * {@code scheduler} (which the caller closes after this server).
     */
    public static NbdServer listen(Path socket, Exports exports, Limits limits, Scheduler scheduler)
            throws IOException {
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
            Files.setPosixFilePermissions(tmp, PosixFilePermissions.fromString("rw-rw-rw-"));
            Files.move(tmp, socket, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException | RuntimeException e) {
            server.close();
            Files.deleteIfExists(tmp);
            throw e;
        }
        NbdServer s = new NbdServer(socket, server, exports, limits, scheduler);
        s.acceptor.start();
        s.watchdog.start();
        log.info("nbd listening socket={} max_clients={} handshake_timeout={}s unread_reply_timeout={}s", socket,
                limits.maxClients(), limits.handshake().toSeconds(), limits.unreadReply().toSeconds());
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
            Peer peer = new Peer("unix#" + n, user(ch));
            if (clients.size() >= limits.maxClients()) {
                log.warn("nbd client={} refused: {} clients already", peer, limits.maxClients());
                close(ch);
                continue;
            }
            if (peer.user() == null || !exports.admits(peer)) {
                log.warn("nbd client={} refused: its user has no export here", peer);
                close(ch);
                continue;
            }
            long mine = clients.stream().filter(k -> peer.user().equals(k.peer().user())).count();
            if (mine >= limits.maxPerUser()) {
                log.warn("nbd client={} refused: its user has {} clients already", peer, mine);
                close(ch);
                continue;
            }
            Connection c = new Connection(ch, exports, peer, scheduler, buffers);
            clients.add(c);
            if (closed) { // close() hung up on the clients it saw; this one came after
                c.closeChannel();
            }
            Thread t = new Thread(() -> {
                try {
                    c.run();
                } finally {
                    clients.remove(c);
                    threads.remove(Thread.currentThread());
                }
            }, "nbd-" + n);
            t.setDaemon(true);
            threads.add(t);
            t.start();
        }
    }

    /**
     * Hangs up on every client whose export it may no longer see (its tenant's export was
     * removed, or the volume given to another): the exports changed.
     */
    public void revalidate() {
        for (Connection c : clients) {
            String name = c.exportName();
            if (name != null && !exports.visible(c.peer(), name)) {
                log.warn("nbd client={} export={} hung up on: it is no longer this client's", c.peer(), name);
                c.closeChannel();
            }
        }
    }

    /** The user the client's process runs as (SO_PEERCRED), or null (then it sees no export). */
    private static UserPrincipal user(SocketChannel ch) {
        try {
            UnixDomainPrincipal p = ch.getOption(ExtendedSocketOptions.SO_PEERCRED);
            return p == null ? null : p.user();
        } catch (IOException | UnsupportedOperationException e) {
            log.warn("nbd: a client's credentials cannot be read: {}", e.toString());
            return null;
        }
    }

    /**
     * A few times a second: hangs up on the clients past a limit: one still in its handshake or
     * stopped in the middle of a request's data (the handshake's limit), one that has left a reply
     * unread (it stopped reading, or sends without reading).
     */
    private void watch() {
        long tick = Math.max(10, Math.min(1000, Math.min(limits.handshake().toMillis(),
                limits.unreadReply().toMillis()) / 4));
        while (!closed) {
            try {
                Thread.sleep(tick);
            } catch (InterruptedException e) {
                return;
            }
            long now = System.nanoTime();
            for (Connection c : clients) {
                long h = c.handshakeSince();
                long s = c.sendingSince();
                long p = c.payloadSince();
                if (p != 0 && now - p > limits.handshake().toNanos()) {
                    log.warn("nbd client={} hung up on: it stopped for {} s in the middle of a request's data",
                            c.peer(), limits.handshake().toSeconds());
                    c.closeChannel();
                } else if (h != 0 && now - h > limits.handshake().toNanos()) {
                    log.warn("nbd client={} hung up on: no export chosen within {} s of connecting", c.peer(),
                            limits.handshake().toSeconds());
                    c.closeChannel();
                } else if (s != 0 && now - s > limits.unreadReply().toNanos()) {
                    log.warn("nbd client={} hung up on: it left a reply unread for {} s", c.peer(),
                            limits.unreadReply().toSeconds());
                    c.closeChannel();
                }
            }
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
        clients.forEach(Connection::closeChannel);
        watchdog.interrupt();
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
