package vmfuse.nbd;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.nio.file.attribute.UserPrincipal;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
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

    /** Where the server listens: a unix socket (clients told apart by uid), or TCP with TLS required. */
    public sealed interface Endpoint permits Unix, Tcp {}

    /** A unix socket: a stale socket file there is replaced; mode 0666, what a client sees is its uid's. */
    public record Unix(Path path) implements Endpoint {}

    /** TCP, TLS with pre-shared keys required: what a client sees is its key identity's. */
    public record Tcp(InetSocketAddress address, TlsPsk psk) implements Endpoint {
        public Tcp {
            if (psk == null) {
                throw new IllegalArgumentException("TCP without TLS: never");
            }
        }
    }

    /** An endpoint, bound. */
    private record Bound(Endpoint endpoint, ServerSocketChannel channel, String name) {}

    private final List<Bound> bound;
    private final Exports exports;
    private final Limits limits;
    /** TCP connections from one host that have not proven a key yet, at most: the others wait their turn. */
    static final int MAX_UNPROVEN_PER_HOST = 4;
    /** All clients' request data together, at most. */
    static final long BUFFER_BUDGET = 64 << 20;

    private final Scheduler scheduler;
    private final Buffers buffers = new Buffers(BUFFER_BUDGET);
    private final Polling polling;
    private final Set<Connection> clients = ConcurrentHashMap.newKeySet();
    private final Set<Thread> threads = ConcurrentHashMap.newKeySet();
    private final AtomicLong accepted = new AtomicLong();
    private final List<Thread> acceptors = new ArrayList<>();
    private final Thread watchdog;
    private volatile boolean closed;

    /**
     * What one client may take: {@code maxClients} connected at once; {@code handshake}, the time
     * from connecting to choosing an export; {@code unreadReply}, how long one reply may wait for
     * the client to read it; {@code poll}, how long its thread may busy-poll its socket for its
     * next request before sleeping (0: never; see {@link Polling}); {@code quick}, a kind of
     * request that lately took less than this is done on the client's reading thread, not handed
     * to a worker (see {@link Limits#DEFAULT_QUICK}).
     */
    public record Limits(int maxClients, int maxPerUser, Duration handshake, Duration unreadReply, Duration poll,
            Duration quick) {
        /** The busy-poll window by default: a client's next request within it costs no wake-up. */
        public static final Duration DEFAULT_POLL = Duration.ofNanos(50_000);
        /** The longest busy-poll window: past it a wake-up costs little beside the wait. */
        public static final Duration MAX_POLL = Duration.ofMillis(1);
        /**
         * What a request must take less than, lately, to be done on the reading thread with
         * others in flight: a write or read in the page cache, a journal device's write in memory.
         * Handing it to a worker (a wake-up, and the worker's sleep after) would cost more than the
         * request. A slower kind (a read from the disk, a flush) goes to a worker, so the requests
         * behind it are read and go to the disk beside it.
         */
        public static final Duration DEFAULT_QUICK = Duration.ofNanos(20_000);

        public Limits {
            if (maxClients < 1 || maxPerUser < 1 || handshake.isNegative() || unreadReply.isNegative()
                    || poll.isNegative() || poll.compareTo(MAX_POLL) > 0 || quick.isNegative()) {
                throw new IllegalArgumentException("limits " + maxClients + " " + maxPerUser + " " + handshake + " "
                        + unreadReply + " " + poll + " " + quick);
            }
        }

        public Limits(int maxClients, int maxPerUser, Duration handshake, Duration unreadReply) {
            this(maxClients, maxPerUser, handshake, unreadReply, DEFAULT_POLL, DEFAULT_QUICK);
        }

        /** {@code maxClients}, a quarter of them per user, 30 s for a handshake, 60 s for a reply to be read. */
        public static Limits of(int maxClients) {
            return new Limits(maxClients, Math.max(1, maxClients / 4), Duration.ofSeconds(30), Duration.ofSeconds(60));
        }

        /** These limits with a busy-poll window of {@code poll}. */
        public Limits withPoll(Duration poll) {
            return new Limits(maxClients, maxPerUser, handshake, unreadReply, poll, quick);
        }

        /** These limits with requests done on the reading thread when they take less than {@code quick}. */
        public Limits withQuick(Duration quick) {
            return new Limits(maxClients, maxPerUser, handshake, unreadReply, poll, quick);
        }
    }

    private NbdServer(List<Bound> bound, Exports exports, Limits limits, Scheduler scheduler) {
        this.bound = bound;
        this.exports = exports;
        this.limits = limits;
        this.scheduler = scheduler;
        this.polling = new Polling(limits.poll().toNanos(), Polling.defaultPollers());
        this.watchdog = new Thread(this::watch, "nbd-watchdog");
        this.watchdog.setDaemon(true);
    }

    /** As {@link #listen(List, Exports, Limits, Scheduler)}, on one unix socket. */
    public static NbdServer listen(Path socket, Exports exports, Limits limits, Scheduler scheduler)
            throws IOException {
        return listen(List.of(new Unix(socket)), exports, limits, scheduler);
    }

    /**
     * Listens on {@code endpoints} and serves {@code exports}, their requests done by {@code
     * scheduler} (which the caller closes after this server). Nothing is left listening if one
     * endpoint cannot be taken.
     */
    public static NbdServer listen(List<Endpoint> endpoints, Exports exports, Limits limits, Scheduler scheduler)
            throws IOException {
        List<Bound> bound = new ArrayList<>();
        try {
            for (Endpoint e : endpoints) {
                bound.add(bind(e));
            }
        } catch (IOException | RuntimeException e) {
            for (Bound b : bound) {
                b.channel().close();
                if (b.endpoint() instanceof Unix u) {
                    Files.deleteIfExists(u.path());
                }
            }
            throw e;
        }
        NbdServer s = new NbdServer(bound, exports, limits, scheduler);
        for (Bound b : bound) {
            Thread t = new Thread(() -> s.accept(b), "nbd-accept-" + b.name());
            t.setDaemon(true);
            s.acceptors.add(t);
            t.start();
            log.info("nbd listening on {} max_clients={} handshake_timeout={}s unread_reply_timeout={}s poll_us={}"
                    + " pollers={}", b.name(), limits.maxClients(), limits.handshake().toSeconds(),
                    limits.unreadReply().toSeconds(), limits.poll().toNanos() / 1000, s.polling.maxPollers());
        }
        s.watchdog.start();
        return s;
    }

    private static Bound bind(Endpoint e) throws IOException {
        if (e instanceof Tcp t) {
            ServerSocketChannel server = ServerSocketChannel.open();
            try {
                server.bind(t.address());
            } catch (IOException | RuntimeException ex) {
                server.close();
                throw new IOException("cannot listen on " + t.address() + ": " + ex.getMessage(), ex);
            }
            InetSocketAddress at = (InetSocketAddress) server.getLocalAddress();
            return new Bound(e, server, "tcp:" + at.getHostString() + ":" + at.getPort() + " (TLS-PSK, "
                    + t.psk().identities().size() + " identities)");
        }
        Path socket = ((Unix) e).path();
        SocketPath.clear(socket);
        Path tmp = socket.resolveSibling("." + socket.getFileName() + ".binding");
        Files.deleteIfExists(tmp);
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            server.bind(UnixDomainSocketAddress.of(tmp));
            Files.setPosixFilePermissions(tmp, PosixFilePermissions.fromString("rw-rw-rw-"));
            SocketPath.install(tmp, socket);
        } catch (IOException | RuntimeException ex) {
            server.close();
            Files.deleteIfExists(tmp);
            throw ex;
        }
        return new Bound(e, server, "unix:" + socket);
    }

    /** The unix socket it listens on, or null. */
    public Path socket() {
        return bound.stream().filter(b -> b.endpoint() instanceof Unix).map(b -> ((Unix) b.endpoint()).path())
                .findFirst().orElse(null);
    }

    /** The TCP address it listens on (its port bound, if 0 was asked), or null. */
    public InetSocketAddress tcpAddress() {
        for (Bound b : bound) {
            if (b.endpoint() instanceof Tcp) {
                try {
                    return (InetSocketAddress) b.channel().getLocalAddress();
                } catch (IOException e) {
                    return null;
                }
            }
        }
        return null;
    }

    /** Clients connected now. */
    public int clients() {
        return clients.size();
    }

    private void accept(Bound b) {
        boolean tcp = b.endpoint() instanceof Tcp;
        while (!closed) {
            SocketChannel ch;
            try {
                ch = b.channel().accept();
            } catch (ClosedChannelException e) {
                return;
            } catch (IOException e) {
                if (!closed) {
                    log.error("nbd {} accept failed: {}", b.name(), e.toString());
                }
                return;
            }
            long n = accepted.incrementAndGet();
            Peer peer = tcp ? new Peer("tcp#" + n + "[" + remote(ch) + "]", null) : new Peer("unix#" + n, user(ch));
            if (clients.size() >= limits.maxClients()) {
                log.warn("nbd client={} refused: {} clients already", peer, limits.maxClients());
                close(ch);
                continue;
            }
            // on TCP, who it is is known once TLS is on; until then the handshake limit bounds it
            if (!tcp && (peer.user() == null || !exports.admits(peer))) {
                log.warn("nbd client={} refused: its user has no export here", peer);
                close(ch);
                continue;
            }
            long mine = tcp ? 0 : clients.stream().filter(k -> peer.user().equals(k.peer().user())).count();
            if (mine >= limits.maxPerUser()) {
                log.warn("nbd client={} refused: its user has {} clients already", peer, mine);
                close(ch);
                continue;
            }
            if (tcp) {
                String remote = Transport.remoteHost(ch);
                long unproven = clients.stream().filter(k -> k.peer().user() == null && k.peer().tlsIdentity() == null
                        && remote.equals(k.remoteHost())).count();
                if (unproven >= MAX_UNPROVEN_PER_HOST) {
                    log.debug("nbd client={} refused: {} connections from {} have not proven a key yet", peer,
                            unproven, remote);
                    close(ch);
                    continue;
                }
                tune(ch);
            }
            Connection c = new Connection(ch, exports, peer, scheduler, buffers, polling, limits.quick().toNanos(),
                    tcp ? ((Tcp) b.endpoint()).psk() : null,
                    this::admitIdentity);
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
     * Once a TCP client has proven its key: null if its identity may have one more client, else
     * why not (an identity holds at most maxPerUser connections, as a uid does).
     */
    private String admitIdentity(Connection c) {
        String id = c.peer().tlsIdentity();
        long mine = clients.stream().filter(k -> k != c && id.equals(k.peer().tlsIdentity())).count();
        return mine >= limits.maxPerUser() ? "its key identity has " + mine + " clients already" : null;
    }

    /** A TCP client's socket: replies go at once (no Nagle), and a peer that vanished is found (keepalive). */
    private static void tune(SocketChannel ch) {
        try {
            ch.setOption(java.net.StandardSocketOptions.TCP_NODELAY, true);
            ch.setOption(java.net.StandardSocketOptions.SO_KEEPALIVE, true);
            ch.setOption(jdk.net.ExtendedSocketOptions.TCP_KEEPIDLE, 60);
            ch.setOption(jdk.net.ExtendedSocketOptions.TCP_KEEPINTERVAL, 10);
            ch.setOption(jdk.net.ExtendedSocketOptions.TCP_KEEPCOUNT, 6);
        } catch (IOException | UnsupportedOperationException e) {
            log.warn("nbd: a TCP client's socket options: {}", e.toString());
        }
    }

    private static String remote(SocketChannel ch) {
        try {
            return String.valueOf(ch.getRemoteAddress());
        } catch (IOException e) {
            return "?";
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
     * A few times a second: hangs up on the clients past a limit: one still in its handshake, or
     * that has kept the server waiting for a request's data (the handshake's limit, over the whole
     * payload); one that has left a reply unread (it stopped reading, or sends without reading).
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
                    log.warn("nbd client={} hung up on: it kept the server waiting {} s in all for a request's data",
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
        for (Bound b : bound) {
            try {
                b.channel().close();
            } catch (IOException e) {
                log.warn("nbd {} close: {}", b.name(), e.toString());
            }
        }
        clients.forEach(Connection::closeChannel);
        watchdog.interrupt();
        try {
            for (Thread a : acceptors) {
                a.join(5000);
            }
            long deadline = System.nanoTime() + 30_000_000_000L;
            for (Thread t : threads) {
                t.join(Math.max(1, (deadline - System.nanoTime()) / 1_000_000));
                if (t.isAlive()) {
                    log.warn("nbd client thread {} still in a request after 30 s; unmounting without it", t.getName());
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        for (Bound b : bound) {
            if (b.endpoint() instanceof Unix u) {
                try {
                    Files.deleteIfExists(u.path());
                } catch (IOException e) {
                    log.warn("nbd socket={} not removed: {}", u.path(), e.toString());
                }
            }
        }
        log.info("nbd closed {}", String.join(" ", bound.stream().map(Bound::name).toList()));
    }
}
