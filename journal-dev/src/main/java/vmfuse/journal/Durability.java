package vmfuse.journal;

import java.util.Locale;

/** What a journal device's contents survive (README, "Journal devices"; DESIGN.md). */
public enum Durability {
    /** Once a flush (fsync/fdatasync) returns, the data survive kill -9 of the daemon and a host crash. */
    FLUSH,
    /** Memory speed; persisted on close, unmount and a timer; a crash loses what was written since. */
    CLOSE;

    public String label() {
        return name().toLowerCase(Locale.ROOT);
    }

    public static Durability parse(String s) throws StoreException {
        for (Durability d : values()) {
            if (d.label().equals(s)) {
                return d;
            }
        }
        throw new StoreException(StoreException.EINVAL, "durability must be 'flush' or 'close', not '" + s + "'");
    }
}
