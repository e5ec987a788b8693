package vmfuse.fs.mount;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * The kernel's mount table, read from /proc/self/mountinfo (proc(5)): which mount points are
 * vmfuse mounts and which store each serves. A vmfuse mount has fstype {@code fuse.vmfuse} and
 * the store directory as its source (libfuse's fsname).
 */
public final class MountTable {
    public static final String FSTYPE = "fuse.vmfuse";

    /** One line of mountinfo: where, what filesystem type, and its source. */
    public record Entry(String mountPoint, String fsType, String source) {
        public boolean isVmfuse() {
            return FSTYPE.equals(fsType);
        }
    }

    private MountTable() {}

    public static List<Entry> read() throws IOException {
        return parse(Files.readAllLines(Path.of("/proc/self/mountinfo"), StandardCharsets.UTF_8));
    }

    /** Parses mountinfo lines: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS". */
    static List<Entry> parse(List<String> lines) {
        List<Entry> entries = new ArrayList<>();
        for (String line : lines) {
            String[] f = line.split(" ");
            int sep = -1;
            for (int i = 6; i < f.length; i++) {
                if (f[i].equals("-")) {
                    sep = i;
                    break;
                }
            }
            if (f.length < 5 || sep < 0 || sep + 2 >= f.length) {
                continue;
            }
            entries.add(new Entry(unescape(f[4]), unescape(f[sep + 1]), unescape(f[sep + 2])));
        }
        return entries;
    }

    /** The last (topmost) mount at {@code mountPoint}, if any. */
    public static Optional<Entry> at(Path mountPoint) throws IOException {
        String want = mountPoint.toAbsolutePath().normalize().toString();
        Entry found = null;
        for (Entry e : read()) {
            if (e.mountPoint().equals(want)) {
                found = e;
            }
        }
        return Optional.ofNullable(found);
    }

    /** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
    static String unescape(String s) {
        if (s.indexOf('\\') < 0) {
            return s;
        }
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\\' && isOctal(s, i + 1) && isOctal(s, i + 2) && isOctal(s, i + 3)) {
                out.append((char) Integer.parseInt(s.substring(i + 1, i + 4), 8));
                i += 3;
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }

    private static boolean isOctal(String s, int i) {
        return i < s.length() && s.charAt(i) >= '0' && s.charAt(i) <= '7';
    }
}
