package vmfuse.reclaimer;

import java.io.IOException;
import java.util.List;
import java.util.Map;

/**
 * What keeps a VM's punches off the data it writes (PROTOCOL.md, "What the daemon guarantees"):
 * tokens, admission of a notice's ranges, and the punch itself. {@link RawFence} counts writes to
 * a raw image in the filesystem; {@link QemuFence} has QEMU keep a dirty bitmap per token, for a
 * qcow2 image whose guest offsets only QEMU can map.
 */
public interface Fence {
    /** A new fence token. */
    long token() throws IOException;

    /** The parts of {@code ranges} that may wait to be punched; stale-fence if the token is not live. */
    List<Range> admit(long token, List<Range> ranges) throws ProtocolException;

    /** Ranges from the notice log at start, waiting again. */
    void restore(long token, List<Range> ranges);

    /** Bytes waiting. */
    long pendingBytes();

    /** Told when a write lands on ranges waiting (a fence that counts writes itself: RawFence). */
    default void onPendingWritten(WriteTracker.Listener listener) {
    }

    /**
     * Punches what is still safe of {@code ranges} (admitted with {@code token}); {@code done} runs
     * with what was punched and the bytes freed, before the VM's writes resume.
     */
    void carryOut(long token, List<Range> ranges, Done done) throws IOException;

    /**
     * Told what a punch did, while writes are still held off: the ranges punched, the bytes of
     * disk freed, and the bytes of the notice not punched, by reason (what the fence learns only
     * at the punch).
     */
    interface Done {
        void run(List<Range> punched, long freed, Map<Skipped, Long> skipped) throws IOException;
    }
}
