package vmfuse.reclaimer;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * A minimal client of QEMU's QMP on a unix socket: one command at a time, one JSON object per
 * line, events skipped. Answers are returned as the raw JSON line; callers look for what they
 * need. A QMP error becomes an IOException with QEMU's description. Every answer is awaited
 * for a bounded time: a QEMU that hangs (or is stopped with SIGSTOP) makes the connection close
 * and the call fail, instead of holding the reclaim thread forever.
 */
public final class Qmp implements AutoCloseable {
    /** How long an answer (the greeting, or a command's) is awaited by default. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(60);
    private static final ScheduledExecutorService WATCHDOG = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread t = new Thread(r, "qmp-watchdog");
        t.setDaemon(true);
        return t;
    });

    private final SocketChannel ch;
    private final BufferedReader in;
    private final OutputStream out;
    private final Duration timeout;

    private Qmp(SocketChannel ch, Duration timeout) {
        this.ch = ch;
        this.timeout = timeout;
        this.in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch), StandardCharsets.UTF_8));
        this.out = Channels.newOutputStream(ch);
    }

    /** Connects and leaves capabilities negotiation mode; answers are awaited DEFAULT_TIMEOUT. */
    public static Qmp connect(Path socket) throws IOException {
        return connect(socket, DEFAULT_TIMEOUT);
    }

    /** Connects and leaves capabilities negotiation mode; each answer is awaited {@code timeout}. */
    public static Qmp connect(Path socket, Duration timeout) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            ch.connect(UnixDomainSocketAddress.of(socket));
            Qmp q = new Qmp(ch, timeout);
            String greeting = q.readLine("the greeting of " + socket);
            if (greeting == null || !greeting.contains("\"QMP\"")) {
                throw new IOException("not a QMP socket: " + socket);
            }
            q.execute("qmp_capabilities", null);
            return q;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    /** Runs a command ({@code arguments} a JSON object, or null); returns the answer line. */
    public String execute(String command, String arguments) throws IOException {
        String req = "{\"execute\": \"" + command + "\"" + (arguments == null ? "" : ", \"arguments\": " + arguments) + "}\n";
        out.write(req.getBytes(StandardCharsets.UTF_8));
        out.flush();
        String line;
        while ((line = readLine("QMP " + command)) != null) {
            if (line.startsWith("{\"event\"") || line.contains("\"event\":") && !line.contains("\"return\"")) {
                continue;
            }
            if (line.contains("\"error\"")) {
                throw new IOException("QMP " + command + ": " + line);
            }
            return line;
        }
        throw new IOException("QMP " + command + ": QEMU closed the connection");
    }

    /** A line from QEMU, or an IOException if none came within the timeout (the connection is then closed). */
    private String readLine(String what) throws IOException {
        ScheduledFuture<?> bell = WATCHDOG.schedule(() -> {
            try {
                ch.close(); // unblocks the read below
            } catch (IOException e) {
                // closing is all we can do
            }
        }, timeout.toMillis(), TimeUnit.MILLISECONDS);
        try {
            return in.readLine();
        } catch (IOException e) {
            if (!ch.isOpen()) {
                throw new IOException(what + ": QEMU did not answer within " + timeout.toMillis() / 1000.0 + " s", e);
            }
            throw e;
        } finally {
            bell.cancel(false);
        }
    }

    /** A JSON string literal. */
    public static String str(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    @Override
    public void close() throws IOException {
        ch.close();
    }
}
