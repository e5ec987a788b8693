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

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * A minimal client of QEMU's QMP on a unix socket: one command at a time, one JSON object per
 * line, events skipped. Each line is parsed as JSON (Jackson), and an answer is its "return"
 * member; callers read it field by field with {@link #field}, so a missing or changed field is an
 * error that names it, never a verdict changed by QEMU's key order or spacing. A QMP error
 * becomes an IOException with QEMU's class and description. Every answer is awaited
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

    private static final ObjectMapper JSON = new ObjectMapper();

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
            if (greeting == null || !parse(greeting, "the greeting of " + socket).has("QMP")) {
                throw new IOException("not a QMP socket: " + socket);
            }
            q.execute("qmp_capabilities", null);
            return q;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    /** Runs a command ({@code arguments} an object, or null); returns its "return" member. */
    public JsonNode execute(String command, ObjectNode arguments) throws IOException {
        ObjectNode req = JSON.createObjectNode().put("execute", command);
        if (arguments != null) {
            req.set("arguments", arguments);
        }
        out.write((JSON.writeValueAsString(req) + "\n").getBytes(StandardCharsets.UTF_8));
        out.flush();
        String line;
        while ((line = readLine("QMP " + command)) != null) {
            JsonNode answer = parse(line, "QMP " + command);
            if (answer.has("event")) {
                continue;
            }
            if (answer.has("error")) {
                JsonNode e = answer.get("error");
                throw new IOException("QMP " + command + ": " + e.path("class").asText("?") + ": "
                        + e.path("desc").asText(e.toString()));
            }
            return field(answer, "return", "QMP " + command);
        }
        throw new IOException("QMP " + command + ": QEMU closed the connection");
    }

    /** A human monitor command (what QMP has no command for: qemu-io); its text output. */
    public String hmp(String commandLine) throws IOException {
        JsonNode r = execute("human-monitor-command", args("command-line", commandLine));
        if (!r.isTextual()) {
            throw new IOException("QMP human-monitor-command: the return is " + r.getNodeType() + ", not text");
        }
        return r.asText();
    }

    /** A command's arguments from name, value pairs (values: String, Boolean, Number, or JsonNode). */
    public static ObjectNode args(Object... pairs) {
        ObjectNode o = JSON.createObjectNode();
        for (int i = 0; i + 1 < pairs.length; i += 2) {
            String k = (String) pairs[i];
            Object v = pairs[i + 1];
            if (v instanceof JsonNode n) {
                o.set(k, n);
            } else if (v instanceof Boolean b) {
                o.put(k, b);
            } else if (v instanceof Number n) {
                o.put(k, n.longValue());
            } else {
                o.put(k, String.valueOf(v));
            }
        }
        return o;
    }

    /** A JSON array of objects. */
    public static ArrayNode array(ObjectNode... values) {
        ArrayNode a = JSON.createArrayNode();
        for (ObjectNode v : values) {
            a.add(v);
        }
        return a;
    }

    /** A JSON array of strings. */
    public static ArrayNode array(String... values) {
        ArrayNode a = JSON.createArrayNode();
        for (String v : values) {
            a.add(v);
        }
        return a;
    }

    /** Parses a line of JSON; an IOException names {@code what} if it is not. */
    static JsonNode parse(String json, String what) throws IOException {
        try {
            return JSON.readTree(json);
        } catch (JsonProcessingException e) {
            throw new IOException(what + ": not JSON (" + e.getOriginalMessage() + "): " + json, e);
        }
    }

    /** {@code o}'s member {@code name}; an IOException naming it (and {@code where}) if it is missing. */
    static JsonNode field(JsonNode o, String name, String where) throws IOException {
        JsonNode v = o == null ? null : o.get(name);
        if (v == null || v.isNull()) {
            throw new IOException(where + ": no field '" + name + "' in " + abbreviate(o));
        }
        return v;
    }

    /** {@code o}'s text member {@code name}; an IOException naming it if it is missing or not text. */
    static String text(JsonNode o, String name, String where) throws IOException {
        JsonNode v = field(o, name, where);
        if (!v.isTextual()) {
            throw new IOException(where + ": field '" + name + "' is " + v.getNodeType() + ", not text");
        }
        return v.asText();
    }

    /** {@code o}'s boolean member {@code name}; an IOException naming it if it is missing or not a boolean. */
    static boolean bool(JsonNode o, String name, String where) throws IOException {
        JsonNode v = field(o, name, where);
        if (!v.isBoolean()) {
            throw new IOException(where + ": field '" + name + "' is " + v.getNodeType() + ", not a boolean");
        }
        return v.asBoolean();
    }

    private static String abbreviate(JsonNode o) {
        String s = String.valueOf(o);
        return s.length() <= 300 ? s : s.substring(0, 300) + "...";
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

    @Override
    public void close() throws IOException {
        ch.close();
    }
}
