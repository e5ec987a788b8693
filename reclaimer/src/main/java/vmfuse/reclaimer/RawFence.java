package vmfuse.reclaimer;

import java.io.IOException;
import java.util.List;
import java.util.Map;

/** The fence of a raw image: its WriteTracker (guest offsets are file offsets), and the file's punch. */
public final class RawFence implements Fence {
    private final WriteTracker tracker;
    private final Puncher puncher;

    public RawFence(WriteTracker tracker, Puncher puncher) {
        this.tracker = tracker;
        this.puncher = puncher;
    }

    @Override
    public void onPendingWritten(WriteTracker.Listener listener) {
        tracker.listener(listener);
    }

    @Override
    public long token() {
        return tracker.token();
    }

    @Override
    public List<Range> admit(long token, List<Range> ranges) throws ProtocolException {
        return tracker.admit(token, ranges);
    }

    @Override
    public void restore(long token, List<Range> ranges) {
        tracker.restore(ranges);
    }

    @Override
    public long pendingBytes() {
        return tracker.pendingBytes();
    }

    @Override
    public void carryOut(long token, List<Range> ranges, Done done) throws IOException {
        tracker.punch(ranges, still -> {
            long freed = 0;
            for (Range r : still) {
                freed += puncher.punch(r.offset(), r.length());
            }
            done.run(still, freed, Map.of()); // what writes cut is counted as they land (VmReclaimer.written)
        });
    }
}
