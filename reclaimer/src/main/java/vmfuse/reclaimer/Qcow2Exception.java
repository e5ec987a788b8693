package vmfuse.reclaimer;

import java.nio.file.Path;

/** A qcow2 image refused: what is wrong, naming the field of the header or table that is. */
public final class Qcow2Exception extends Exception {
    private final String field;

    public Qcow2Exception(Path image, String field, String problem) {
        super("refusing qcow2 image " + image + ": " + field + " " + problem);
        this.field = field;
    }

    /** The header field or table the problem is in, as qcow2.txt names it. */
    public String field() {
        return field;
    }
}
