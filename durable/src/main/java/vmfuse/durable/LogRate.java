package vmfuse.durable;

import java.util.concurrent.TimeUnit;
import java.util.function.LongConsumer;
import java.util.function.LongSupplier;

/**
 * A bound on the lines one call site logs per second, for lines a guest or a client can cause at
 * will (a release per discard, a notice): past it, lines are counted, not written, and the count
 * is reported once when the next second's first line comes. The log shares the store's disk with
 * every image (a review found one guest's discards able to fill it); what the lines told is
 * still in the counts and the metrics.
 */
public final class LogRate {
    private final int perSecond;
    private final LongSupplier nanos;
    private long windowStart;
    private int inWindow;
    private long suppressed;

    public LogRate(int perSecond) {
        this(perSecond, System::nanoTime);
    }

    LogRate(int perSecond, LongSupplier nanos) {
        if (perSecond < 1) {
            throw new IllegalArgumentException("perSecond " + perSecond);
        }
        this.perSecond = perSecond;
        this.nanos = nanos;
        this.windowStart = nanos.getAsLong();
    }

    /**
     * Whether a line may be logged now. At the first line of a new second after lines were held
     * back, {@code reportSuppressed} is told how many first (under this object's monitor: it
     * logs, nothing more).
     */
    public synchronized boolean allow(LongConsumer reportSuppressed) {
        long now = nanos.getAsLong();
        if (now - windowStart >= TimeUnit.SECONDS.toNanos(1)) {
            windowStart = now;
            inWindow = 0;
            if (suppressed > 0) {
                long n = suppressed;
                suppressed = 0;
                reportSuppressed.accept(n);
            }
        }
        if (inWindow < perSecond) {
            inWindow++;
            return true;
        }
        suppressed++;
        return false;
    }
}
