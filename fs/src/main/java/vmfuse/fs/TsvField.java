package vmfuse.fs;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import vmfuse.durable.Disk;

/**
 * A name as one field of a tab-separated line: the form names take in the store's own files
 * (releases.tsv) and on the control socket. A POSIX file name may hold any byte but '/' and NUL,
 * so an image made as "a\tb.raw" or a journal device as "a\nb" must not split a field or a
 * line: a backslash, tab, newline and carriage return are written as \\, \t, \n and \r (the
 * form `ls -b` shows), everything else as it is. The command line prints names in this form.
 */
public final class TsvField {
    private TsvField() {}

    /** The lines of a file of such lines (UTF-8, each ended by a newline); none for an empty file. */
    public static List<String> lines(byte[] file) {
        String s = new String(file, java.nio.charset.StandardCharsets.UTF_8);
        return s.isEmpty() ? List.of() : List.of(s.split("\n"));
    }

    /** Reads of a store file at mount (vms.tsv, exports.tsv, releases.tsv) before its error counts: a read error may pass. */
    public static final int READ_TRIES = 3;

    /**
     * The lines of a store file read at mount through the store's {@code disk} (so a test can
     * fail the read), tried up to {@link #READ_TRIES} times; each failure tried again is logged.
     */
    public static List<String> readLines(Disk disk, Path file) throws IOException {
        return lines(disk.readAll(file, READ_TRIES,
                e -> LOG.warn("cannot read {} ({}); trying again", file, e.getMessage())));
    }

    private static final Logger LOG = LoggerFactory.getLogger(TsvField.class);

    /** Whether {@code s} holds a tab, newline or carriage return: as it is, it would split a field or a line. */
    public static boolean splits(String s) {
        return s.indexOf('\t') >= 0 || s.indexOf('\n') >= 0 || s.indexOf('\r') >= 0;
    }

    /** The field form of {@code name}: no tab, newline or carriage return left in it. */
    public static String escape(String name) {
        StringBuilder b = null;
        for (int i = 0; i < name.length(); i++) {
            char c = name.charAt(i);
            String e = switch (c) {
                case '\\' -> "\\\\";
                case '\t' -> "\\t";
                case '\n' -> "\\n";
                case '\r' -> "\\r";
                default -> null;
            };
            if (e != null && b == null) {
                b = new StringBuilder(name.length() + 8).append(name, 0, i);
            }
            if (b != null) {
                if (e != null) {
                    b.append(e);
                } else {
                    b.append(c);
                }
            }
        }
        return b == null ? name : b.toString();
    }

    /** The name a field stands for; a backslash before any other character stays as it is. */
    public static String unescape(String field) {
        if (field.indexOf('\\') < 0) {
            return field;
        }
        StringBuilder b = new StringBuilder(field.length());
        for (int i = 0; i < field.length(); i++) {
            char c = field.charAt(i);
            if (c == '\\' && i + 1 < field.length()) {
                char n = field.charAt(i + 1);
                char d = switch (n) {
                    case '\\' -> '\\';
                    case 't' -> '\t';
                    case 'n' -> '\n';
                    case 'r' -> '\r';
                    default -> 0;
                };
                if (d != 0) {
                    b.append(d);
                    i++;
                    continue;
                }
            }
            b.append(c);
        }
        return b.toString();
    }
}
