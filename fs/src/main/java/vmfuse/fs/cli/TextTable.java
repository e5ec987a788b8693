package vmfuse.fs.cli;

import java.io.PrintWriter;
import java.util.List;

/** Prints rows as aligned columns, two spaces apart: text columns to the left, numbers to the right. */
final class TextTable {
    private TextTable() {}

    /** {@code left[i]} says whether column i is text (left-aligned); the first row is the header. */
    static void print(PrintWriter out, List<String[]> rows, boolean... left) {
        int columns = rows.get(0).length;
        int[] width = new int[columns];
        for (String[] r : rows) {
            for (int i = 0; i < columns; i++) {
                width[i] = Math.max(width[i], r[i].length());
            }
        }
        for (String[] r : rows) {
            StringBuilder b = new StringBuilder();
            for (int i = 0; i < columns; i++) {
                if (i > 0) {
                    b.append("  ");
                }
                boolean l = i < left.length && left[i];
                b.append(String.format("%" + (l ? "-" : "") + width[i] + "s", r[i]));
            }
            out.println(b.toString().stripTrailing());
        }
        out.flush();
    }
}
