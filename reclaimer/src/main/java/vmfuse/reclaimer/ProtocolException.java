package vmfuse.reclaimer;

/** A line of the agent protocol (guest-tools/PROTOCOL.md) the daemon will not act on, with the reason it answers. */
public final class ProtocolException extends Exception {
    /** The reason word sent back: malformed, out-of-range, stale-fence. */
    private final String reason;

    public ProtocolException(String reason, String message) {
        super(message);
        this.reason = reason;
    }

    public String reason() {
        return reason;
    }
}
