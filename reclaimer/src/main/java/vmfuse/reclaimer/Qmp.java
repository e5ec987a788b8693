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

/**
 * A minimal client of QEMU's QMP on a unix socket: one command at a time, one JSON object per
 * line, events skipped. Answers are returned as the raw JSON line; callers look for what they
 * need. A QMP error becomes an IOException with QEMU's description.
 */
public final class Qmp implements AutoCloseable {
    private final SocketChannel ch;
    private final BufferedReader in;
    private final OutputStream out;

    private Qmp(SocketChannel ch) {
        this.ch = ch;
        this.in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch), StandardCharsets.UTF_8));
        this.out = Channels.newOutputStream(ch);
    }

    /** Connects and leaves capabilities negotiation mode. */
    public static Qmp connect(Path socket) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            ch.connect(UnixDomainSocketAddress.of(socket));
            Qmp q = new Qmp(ch);
            String greeting = q.in.readLine();
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
        while ((line = in.readLine()) != null) {
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

    /** A JSON string literal. */
    public static String str(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    @Override
    public void close() throws IOException {
        ch.close();
    }
}
