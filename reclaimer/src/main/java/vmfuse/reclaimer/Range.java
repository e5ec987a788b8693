package vmfuse.reclaimer;

/**
 * A range of bytes of a guest's disk or of an image file: {@code length} bytes from
 * {@code offset}. The one range type of the reclaimer (notices, fences, punches, qcow2 maps).
 */
public record Range(long offset, long length) {

    /** The first byte past the range. */
    public long end() {
        return offset + length;
    }

    /** The range {@code [from, to)}. */
    public static Range between(long from, long to) {
        return new Range(from, to - from);
    }
}
