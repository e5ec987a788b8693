package vmfuse.fs.daemon;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
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
            }, new ThreadPoolExecutor.DiscardPolicy());
    private final Thread acceptor;
    private volatile boolean closed;

    /** Listens at {@code path}; {@code handler} maps a request line to the answer text. */
    public ControlServer(Path path, Function<String, String> handler) throws IOException {
        this.path = path;
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
                workers.execute(() -> serve(ch, handler));
            } catch (IOException e) {
                if (!closed) {
                    log.warn("control socket accept failed: {}", e.getMessage());
                }
                return;
            }
        }
    }

    private static void serve(SocketChannel ch, Function<String, String> handler) {
        try (ch) {
            BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch),
                    StandardCharsets.UTF_8), MAX_LINE);
            StringBuilder line = new StringBuilder();
            int c;
            while ((c = in.read()) >= 0 && c != '\n') {
                if (line.length() >= MAX_LINE) {
                    write(ch, "error " + Native.EINVAL + " request too long\n");
                    return;
                }
                line.append((char) c);
            }
            String answer;
            try {
                answer = handler.apply(line.toString().trim());
            } catch (RuntimeException e) {
                log.error("control request '{}' failed", line, e);
                answer = "error " + Native.EIO + " " + e + "\n";
            }
            write(ch, answer);
        } catch (IOException e) {
            log.debug("control connection: {}", e.getMessage());
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
