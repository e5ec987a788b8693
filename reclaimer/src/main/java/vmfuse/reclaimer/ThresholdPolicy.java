package vmfuse.reclaimer;

import java.util.HashMap;
import java.util.Map;

/**
 * When deleted space in an image is worth reclaiming (DESIGN.md, idea 2).
 *
 * <p>The threshold is a fraction of an image's size. It adapts to the host disk:
 * <ul>
 *   <li>it starts at the fraction of the host disk that is free;</li>
 *   <li>when free space grows, it rises linearly with it: by the growth of the free fraction,
 *       up to 1;</li>
 *   <li>when free space shrinks, it halves, so a filling disk reclaims eagerly.</li>
 * </ul>
 * A deletion notice whose size reaches the threshold (times the image size) is reclaimed at once;
 * smaller ones accumulate per image until their sum reaches it, and then go together.
 *
 * <p>Thread-safe: one policy serves every VM of a host.
 */
public final class ThresholdPolicy {

    /** What to do with a notice: reclaim {@code bytes} (everything pending for the image), or wait. */
    public record Decision(boolean reclaim, long bytes) {
        static final Decision WAIT = new Decision(false, 0);
    }

    private double threshold;
    private double lastFreeFraction;
    // guarded by this
    private final Map<String, Long> pending = new HashMap<>();

    /** A policy for a host disk with {@code free} of {@code total} bytes free now. */
    public ThresholdPolicy(long free, long total) {
        this.lastFreeFraction = fraction(free, total);
        this.threshold = lastFreeFraction;
    }

    private static double fraction(long free, long total) {
        if (total <= 0 || free < 0 || free > total) {
            throw new IllegalArgumentException("free " + free + " of total " + total);
        }
        return (double) free / total;
    }

    /** Takes the host disk's current free space into account. */
    public synchronized void observeDisk(long free, long total) {
        double f = fraction(free, total);
        if (f > lastFreeFraction) {
            threshold = Math.min(1.0, threshold + (f - lastFreeFraction));
        } else if (f < lastFreeFraction) {
            threshold = threshold / 2;
        }
        lastFreeFraction = f;
    }

    /** The current threshold, as a fraction of an image's size. */
    public synchronized double threshold() {
        return threshold;
    }

    /** Bytes of an image's deletions waiting for the threshold. */
    public synchronized long pending(String image) {
        return pending.getOrDefault(image, 0L);
    }

    /**
     * A deletion of {@code deletedBytes} in an image of {@code imageSize} bytes: reclaim now (with
     * whatever was pending for that image), or keep it pending.
     */
    public synchronized Decision notice(String image, long deletedBytes, long imageSize) {
        if (deletedBytes < 0 || imageSize <= 0) {
            throw new IllegalArgumentException("deleted " + deletedBytes + " of image size " + imageSize);
        }
        long sum = Math.addExact(pending.getOrDefault(image, 0L), deletedBytes);
        if (sum >= threshold * imageSize) {
            pending.remove(image);
            return new Decision(true, sum);
        }
        pending.put(image, sum);
        return Decision.WAIT;
    }
}
