package vmfuse.reclaimer;

import java.util.ArrayList;
import java.util.List;

/**
 * A deletion notice from a guest's agent: the disk ranges a deleted file held (PROTOCOL.md).
 * Ranges are in guest-disk bytes.
 */
public record Notice(long seq, long token, long fileSize, List<Range> ranges) {
    static final int MAX_RANGES = 256;

    /**
     * Parses the fields after "NOTICE" ({@code seq token size ranges}) for a disk of {@code diskSize}
     * bytes; refuses anything malformed or outside the disk.
     */
    static Notice parse(String[] f, long diskSize) throws ProtocolException {
        if (f.length != 5) {
            throw new ProtocolException("malformed", "NOTICE takes 4 fields, not " + (f.length - 1));
        }
        long seq = number(f[1], "seq");
        long token = number(f[2], "token");
        long size = number(f[3], "size");
        String[] parts = f[4].split(",", -1);
        if (parts.length > MAX_RANGES) {
            throw new ProtocolException("malformed", parts.length + " ranges, at most " + MAX_RANGES);
        }
        List<Range> ranges = new ArrayList<>(parts.length);
        for (String p : parts) {
            int colon = p.indexOf(':');
            if (colon < 0) {
                throw new ProtocolException("malformed", "range '" + p + "' is not offset:length");
            }
            long off = number(p.substring(0, colon), "offset");
            long len = number(p.substring(colon + 1), "length");
            if (len == 0) {
                throw new ProtocolException("malformed", "range '" + p + "' is empty");
            }
            if (off >= diskSize || len > diskSize - off) {
                throw new ProtocolException("out-of-range", "range " + off + ":" + len + " is outside the disk of "
                        + diskSize + " bytes");
            }
            ranges.add(new Range(off, len));
        }
        return new Notice(seq, token, size, ranges);
    }

    /** An unsigned decimal below 2^63, as the protocol writes numbers. */
    static long number(String s, String what) throws ProtocolException {
        if (s.isEmpty() || s.length() > 19) {
            throw new ProtocolException("malformed", what + " '" + s + "' is not a number");
        }
        for (int i = 0; i < s.length(); i++) {
            if (s.charAt(i) < '0' || s.charAt(i) > '9') {
                throw new ProtocolException("malformed", what + " '" + s + "' is not a number");
            }
        }
        try {
            return Long.parseLong(s);
        } catch (NumberFormatException e) {
            throw new ProtocolException("malformed", what + " '" + s + "' is past 2^63");
        }
    }

    /** Sum of the ranges' lengths. */
    public long bytes() {
        long n = 0;
        for (Range r : ranges) {
            n += r.length();
        }
        return n;
    }

    /** The ranges as the protocol and the notice log write them. */
    static String format(List<Range> ranges) {
        StringBuilder b = new StringBuilder();
        for (Range r : ranges) {
            if (b.length() > 0) {
                b.append(',');
            }
            b.append(r.offset()).append(':').append(r.length());
        }
        return b.toString();
    }
}
