package vmfuse.fs;

import java.nio.charset.StandardCharsets;

import vmfuse.fs.nativeio.Native;

/**
 * Where a path of the mount leads. The namespace is fixed and flat:
 * <pre>
 *   /                 root (read-only)
 *   /images/NAME      an image file, a passthrough of STORE/images/NAME
 *   /journals/NAME    a journal device (the journal-device issue fills this in)
 * </pre>
 * Every component is checked here, once: no ".", "..", "/" inside a name, NUL, or a name over
 * NAME_MAX bytes. The kernel already resolves ".." before a request reaches FUSE; this check is
 * the second fence, and the one that guards names arriving from the command line.
 */
public record Node(Kind kind, String name) {

    public enum Kind { ROOT, IMAGES_DIR, JOURNALS_DIR, IMAGE, JOURNAL }

    public static final String IMAGES = "images";
    public static final String JOURNALS = "journals";
    static final int NAME_MAX = 255;
    /**
     * The name libfuse gives a file unlinked while open (".fuse_hiddenNNN"), until its last close:
     * never listed, never a name a user may create (see VmFuseFs).
     */
    public static final String HIDDEN_PREFIX = ".fuse_hidden";

    private static final Node ROOT = new Node(Kind.ROOT, null);
    private static final Node IMAGES_NODE = new Node(Kind.IMAGES_DIR, null);
    private static final Node JOURNALS_NODE = new Node(Kind.JOURNALS_DIR, null);

    /** Resolves an absolute mount path ("/images/vm1.qcow2"). ENOENT for a path outside the namespace. */
    public static Node resolve(String path) throws FsException {
        if (path == null || !path.startsWith("/")) {
            throw new FsException(Native.EINVAL, "not an absolute path: " + path);
        }
        if (path.equals("/")) {
            return ROOT;
        }
        String[] parts = path.substring(1).split("/", -1);
        for (String part : parts) {
            checkName(part);
        }
        String top = parts[0];
        Kind dir;
        if (top.equals(IMAGES)) {
            dir = Kind.IMAGES_DIR;
        } else if (top.equals(JOURNALS)) {
            dir = Kind.JOURNALS_DIR;
        } else {
            throw new FsException(Native.ENOENT, "no such entry: " + path);
        }
        if (parts.length == 1) {
            return dir == Kind.IMAGES_DIR ? IMAGES_NODE : JOURNALS_NODE;
        }
        if (parts.length > 2) {
            throw new FsException(Native.ENOENT, "no subdirectories in /" + top + ": " + path);
        }
        return new Node(dir == Kind.IMAGES_DIR ? Kind.IMAGE : Kind.JOURNAL, parts[1]);
    }

    /** Checks that {@code name} is one safe path component; throws with the reason if not. */
    public static void checkName(String name) throws FsException {
        if (name == null || name.isEmpty()) {
            throw new FsException(Native.EINVAL, "empty name");
        }
        if (name.equals(".") || name.equals("..")) {
            throw new FsException(Native.EINVAL, "name may not be '" + name + "'");
        }
        if (name.indexOf('/') >= 0) {
            throw new FsException(Native.EINVAL, "name may not contain '/': " + printable(name));
        }
        if (name.indexOf('\0') >= 0) {
            throw new FsException(Native.EINVAL, "name may not contain NUL: " + printable(name));
        }
        if (name.getBytes(StandardCharsets.UTF_8).length > NAME_MAX) {
            throw new FsException(Native.ENAMETOOLONG, "name longer than " + NAME_MAX + " bytes");
        }
    }

    private static String printable(String s) {
        return s.replace("\0", "\\0");
    }
}
