package vmfuse.reclaimer;

import java.io.IOException;

/**
 * One connection of a guest's agent: the protocol of guest-tools/PROTOCOL.md, a line in, a line
 * out. Knows nothing of sockets; {@link AgentListener} feeds it.
 */
public final class AgentSession {
    static final int VERSION = 1;
    static final int MAX_LINE = 4096;
    static final int MAX_ERRORS = 16;

    /** The VM the connection belongs to (known by its socket). */
    public interface Host {
        long diskSize();

        /** The highest seq in the VM's notice log (0 if none). */
        long lastSeq();

        long fence() throws IOException;

        /** Logs the notice durably (and decides on it); the answer line. */
        String notice(Notice n) throws ProtocolException, IOException;

        /** A line refused: counted and logged. */
        void refused(String reason, String detail);
    }

    private final Host host;
    private boolean greeted;
    private int errors;
    private boolean closed;

    public AgentSession(Host host) {
        this.host = host;
    }

    /** True once the session must end (a bad version, too many errors). */
    public boolean closed() {
        return closed;
    }

    /** The answer to a line past MAX_LINE bytes, which the reader dropped. */
    public String lineTooLong() {
        return error("line longer than " + MAX_LINE + " bytes");
    }

    /** The answer to one line (without its newline). */
    public String handle(String line) throws IOException {
        if (line.length() >= MAX_LINE) {
            return lineTooLong();
        }
        String[] f = line.split(" ", -1);
        if (f[0].equals("HELLO") || !greeted) { // a HELLO may come again: the agent greets before each batch
            if (f.length == 3 && f[0].equals("HELLO") && f[1].equals("vmfuse-agent")) {
                if (!f[2].equals(String.valueOf(VERSION))) {
                    closed = true;
                    host.refused("version", "agent speaks version '" + f[2] + "'");
                    return "ERROR unsupported version " + f[2];
                }
                greeted = true;
                return "HELLO vmfuse " + VERSION + " " + host.lastSeq();
            }
            return error("the first line must be HELLO vmfuse-agent " + VERSION);
        }
        switch (f[0]) {
            case "FENCE":
                if (f.length != 1) {
                    return error("FENCE takes no fields");
                }
                try {
                    return "FENCE " + host.fence();
                } catch (IOException e) {
                    host.refused("fence", e.getMessage());
                    return "ERROR no fence: " + e.getMessage(); // the agent tries again later
                }
            case "NOTICE":
                long seq;
                try {
                    seq = f.length > 1 ? Notice.number(f[1], "seq") : -1;
                } catch (ProtocolException e) {
                    return error(e.getMessage());
                }
                if (seq < 0) {
                    return error("NOTICE without a seq");
                }
                try {
                    return host.notice(Notice.parse(f, host.diskSize()));
                } catch (ProtocolException e) {
                    host.refused(e.reason(), "seq=" + seq + " " + e.getMessage());
                    return "REFUSED " + seq + " " + e.reason();
                }
            default:
                return error("unknown request '" + (f[0].length() > 32 ? f[0].substring(0, 32) + "..." : f[0]) + "'");
        }
    }

    private String error(String why) {
        host.refused("malformed", why);
        if (++errors >= MAX_ERRORS) {
            closed = true;
        }
        return "ERROR " + why;
    }
}
