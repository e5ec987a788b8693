package vmfuse.journal;

import java.util.Locale;

/** The one parser of sizes given by operators: "4096", "64K", "128M", "1G", "2T" (powers of 1024). */
public final class ByteSize {
    private ByteSize() {}

    public static long parse(String s) throws StoreException {
        String t = s == null ? "" : s.trim().toUpperCase(Locale.ROOT);
        if (t.endsWith("IB")) {
            t = t.substring(0, t.length() - 2);
        } else if (t.endsWith("B") && t.length() > 1 && !Character.isDigit(t.charAt(t.length() - 2))) {
            t = t.substring(0, t.length() - 1);
        }
        int shift = 0;
        if (!t.isEmpty()) {
            switch (t.charAt(t.length() - 1)) {
                case 'K' -> shift = 10;
                case 'M' -> shift = 20;
                case 'G' -> shift = 30;
                case 'T' -> shift = 40;
                case 'P' -> shift = 50;
                case 'E' -> shift = 60;
                default -> { }
            }
        }
        String digits = shift == 0 ? t : t.substring(0, t.length() - 1);
        if (digits.isEmpty() || !digits.chars().allMatch(Character::isDigit) || digits.length() > 19) {
            throw new StoreException(StoreException.EINVAL, "bad size '" + s + "': use a number of bytes, or with K, M, G or T");
        }
        long n;
        try {
            n = Long.parseLong(digits);
        } catch (NumberFormatException e) {
            throw new StoreException(StoreException.EFBIG, "size '" + s + "' is past 2^63");
        }
        if (n > (Long.MAX_VALUE >> shift)) {
            throw new StoreException(StoreException.EFBIG, "size '" + s + "' is past 2^63");
        }
        return n << shift;
    }

    /** {@code bytes} for a message: "512 B", "4.0 KiB", "128.0 MiB", up to EiB. */
    public static String format(long bytes) {
        if (bytes < 1024) {
            return bytes + " B";
        }
        String units = "KMGTPE";
        int u = (63 - Long.numberOfLeadingZeros(bytes)) / 10; // 1 for KiB ... 6 for EiB
        return String.format(Locale.ROOT, "%.1f %siB", bytes / Math.pow(1024, u), units.charAt(u - 1));
    }
}
