package vmfuse.reclaimer;

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
 * smaller ones accumulate per image (each VmReclaimer keeps its image's sum, less what the guest
 * wrote again) until their sum reaches it, and then go together.
 *
 * <p>Thread-safe: one policy serves every VM of a host.
 */
public final class ThresholdPolicy {

    private double threshold;
    private double lastFreeFraction;

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

    /**
     * Whether {@code pendingBytes} of deletions waiting in an image of {@code imageSize} bytes are
     * worth reclaiming now: their sum has reached the threshold. Asked with each new notice (the
     * sum includes it) and again whenever the disk is observed, so a filling disk makes waiting
     * notices go without a new one.
     */
    public synchronized boolean due(long pendingBytes, long imageSize) {
        if (pendingBytes < 0 || imageSize <= 0) {
            throw new IllegalArgumentException("pending " + pendingBytes + " of image size " + imageSize);
        }
        return pendingBytes > 0 && pendingBytes >= threshold * imageSize;
    }
}
