package vmfuse.fs.daemon;

import java.io.IOException;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import vmfuse.fs.nativeio.Native;

/**
 * The daemon's control socket: a unix socket (mode 0600, in the store) that answers one
 * command per connection. A request is one line of at most 1 KiB; the answer is text lines,
 * then the connection closes. At most 4 requests are served at once and 16 wait; more are
 * turned away, so a misbehaving client cannot tie up the daemon.
 */
public final class ControlServer implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(ControlServer.class);
    private static final int MAX_LINE = 1024;

    private final Path path;
    private final ServerSocketChannel server;
    /**
     * Four workers, each started when a request finds none idle (a pool whose core is one would
     * queue every request behind a long one, such as `vm reclaim`, before starting a second).
     */
    private final ThreadPoolExecutor workers = new ThreadPoolExecutor(4, 4, 30, TimeUnit.SECONDS,
            new ArrayBlockingQueue<>(16), r -> {
                Thread t = new Thread(r, "vmfuse-control");
                t.setDaemon(true);
                return t;
            }, (r, pool) -> ((Serve) r).refuse());
    private final Thread acceptor;
    private final Duration lineWait;
    private volatile boolean closed;

    /** How long the acceptor reads a refused client's request, so that it gets its answer. */
    private static final Duration REFUSED_WAIT = Duration.ofMillis(500);

    /** How long a client has to send its request line before it is hung up on. */
    static final Duration LINE_WAIT = Duration.ofSeconds(10);

    /** Listens at {@code path}; {@code handler} maps a request line to the answer text. */
    public ControlServer(Path path, Function<String, String> handler) throws IOException {
        this(path, handler, LINE_WAIT);
    }

    ControlServer(Path path, Function<String, String> handler, Duration lineWait) throws IOException {
        this.path = path;
        this.lineWait = lineWait;
        workers.allowCoreThreadTimeOut(true);
        Files.createDirectories(path.getParent());
        Files.deleteIfExists(path); // a leftover of a daemon that died; we hold the store lock
        server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(path));
        Files.setPosixFilePermissions(path, java.nio.file.attribute.PosixFilePermissions.fromString("rw-------"));
        acceptor = new Thread(() -> acceptLoop(handler), "vmfuse-control-accept");
        acceptor.setDaemon(true);
        acceptor.start();
    }

    private void acceptLoop(Function<String, String> handler) {
        while (!closed) {
            try {
                SocketChannel ch = server.accept();
                workers.execute(new Serve(ch, handler));
            } catch (IOException e) {
                if (!closed) {
                    log.warn("control socket accept failed: {}", e.getMessage());
                }
                return;
            }
        }
    }

    /**
     * One control connection, at a worker. Every worker busy and the queue full (a client that
     * sends nothing holds a worker until {@link #lineWait}; `vm reclaim` may hold one for minutes),
     * a new one is answered EBUSY at once and closed: before, it was dropped unanswered and its
     * socket never closed, and every later `vmfuse status` hung (found by a review).
     */
    private final class Serve implements Runnable {
        private final SocketChannel ch;
        private final Function<String, String> handler;

        Serve(SocketChannel ch, Function<String, String> handler) {
            this.ch = ch;
            this.handler = handler;
        }

        void refuse() {
            try (ch) {
                log.warn("control request refused: {} are being served and {} wait", workers.getActiveCount(),
                        workers.getQueue().size());
                write(ch, "error " + Native.EBUSY + " the daemon is serving as many control requests as it takes; "
                        + "try again\n");
                ch.shutdownOutput();
                readLine(ch, REFUSED_WAIT); // closed with the request unread, the client would lose the answer (ECONNRESET)
            } catch (IOException e) {
                log.debug("control connection: {}", e.getMessage());
            }
        }

        @Override
        public void run() {
            try (ch) {
                String line = readLine(ch, lineWait);
                if (line == null) {
                    write(ch, "error " + Native.EINVAL + " request too long\n");
                    return;
                }
                String answer;
                try {
                    answer = handler.apply(line.trim());
                } catch (RuntimeException e) {
                    log.error("control request '{}' failed", line, e);
                    answer = "error " + Native.EIO + " " + e + "\n";
                }
                write(ch, answer);
            } catch (IOException e) {
                log.debug("control connection: {}", e.getMessage());
            }
        }
    }

    /**
     * The request: up to its newline or the end of what the client sends, within {@code wait}
     * (else IOException, and the connection is closed); null if longer than MAX_LINE.
     */
    private static String readLine(SocketChannel ch, Duration wait) throws IOException {
        long deadline = System.nanoTime() + wait.toNanos();
        ByteBuffer b = ByteBuffer.allocate(MAX_LINE + 1);
        ch.configureBlocking(false);
        try (Selector sel = Selector.open()) {
            ch.register(sel, SelectionKey.OP_READ);
            while (true) {
                int n = ch.read(b);
                for (int i = b.position() - Math.max(n, 0); i < b.position(); i++) {
                    if (b.get(i) == '\n') {
                        return new String(b.array(), 0, i, StandardCharsets.UTF_8);
                    }
                }
                if (n < 0) {
                    return new String(b.array(), 0, b.position(), StandardCharsets.UTF_8);
                }
                if (!b.hasRemaining()) {
                    return null;
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    throw new IOException("no request line within " + wait.toSeconds() + " s");
                }
                sel.select(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
                sel.selectedKeys().clear();
            }
        } finally {
            ch.configureBlocking(true);
        }
    }

    private static void write(SocketChannel ch, String s) throws IOException {
        OutputStream out = Channels.newOutputStream(ch);
        out.write(s.getBytes(StandardCharsets.UTF_8));
        out.flush();
    }

    /** Sends one request to the daemon listening at {@code path} and returns its answer. */
    public static String request(Path path, String line) throws IOException {
        try (SocketChannel ch = SocketChannel.open(UnixDomainSocketAddress.of(path))) {
            write(ch, line + "\n");
            ch.shutdownOutput();
            return new String(Channels.newInputStream(ch).readAllBytes(), StandardCharsets.UTF_8);
        }
    }

    @Override
    public void close() {
        closed = true;
        try {
            server.close();
        } catch (IOException e) {
            log.debug("closing control socket: {}", e.getMessage());
        }
        // A request in progress is let finish for a while before it is interrupted: one may be in
        // a journal checkpoint (journal create, delete, rename), and an interrupt reaching the
        // store's files closed them for good (JournalStore#checkpoint now keeps one off them too)
        workers.shutdown();
        try {
            if (!workers.awaitTermination(10, TimeUnit.SECONDS)) {
                workers.shutdownNow();
            }
        } catch (InterruptedException e) {
            workers.shutdownNow();
            Thread.currentThread().interrupt();
        }
        try {
            Files.deleteIfExists(path);
        } catch (IOException e) {
            log.warn("cannot remove {}: {}", path, e.getMessage());
        }
    }
}
