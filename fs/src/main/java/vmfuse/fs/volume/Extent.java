package vmfuse.fs.volume;

/** A run of a volume's bytes that holds data, or a hole (reads as zeros, holds no space). */
public record Extent(long offset, long length, boolean data) {

    public long end() {
        return offset + length;
    }
}
