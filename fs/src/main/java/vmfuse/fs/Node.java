package vmfuse.fs;

import java.nio.charset.StandardCharsets;

import vmfuse.fs.nativeio.Native;

/**
 * Where a path of the mount leads:
 * <pre>
 *   /                          root (read-only)
 *   /images/                   the images: STORE/images
 *   /images/PATH               an entry of images/ at any depth (an image, or a folder of
 *                              images, as in "tenant1/vm7/disk.qcow2"; the store says which)
 *   /journals/                 the journal devices (flat: no folders)
 *   /journals/NAME             a journal device
 * </pre>
 * Every component is checked here, once: no ".", "..", "/" inside a name, NUL, or a name over
 * NAME_MAX bytes; under images/ at most {@value #MAX_DEPTH} components and {@value #MAX_PATH}
 * bytes. The kernel already resolves ".." before a request reaches FUSE; this check is the second
 * fence, and the one that guards names arriving from the command line or the control socket.
 * The limits keep an image's name a line of a log or a ledger, and every walk of a path short.
 */
public record Node(Kind kind, String name) {

    public enum Kind { ROOT, IMAGES_DIR, JOURNALS_DIR, IMAGE_ENTRY, JOURNAL }

    public static final String IMAGES = "images";
    public static final String JOURNALS = "journals";
    static final int NAME_MAX = 255;
    /** Components of a path under images/: up to seven folders and the image. */
    public static final int MAX_DEPTH = 8;
    /** Bytes of a path under images/ (UTF-8). */
    public static final int MAX_PATH = 1024;
    /**
     * The name libfuse gives a file unlinked while open (".fuse_hiddenNNN", in the file's own
     * folder), until its last close: never listed, never a name a user may create (see VmFuseFs).
     */
    public static final String HIDDEN_PREFIX = ".fuse_hidden";

    private static final Node ROOT = new Node(Kind.ROOT, null);
    private static final Node IMAGES_NODE = new Node(Kind.IMAGES_DIR, "");
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
        if (top.equals(IMAGES)) {
            if (parts.length == 1) {
                return IMAGES_NODE;
            }
            String rest = path.substring(IMAGES.length() + 2);
            checkImagePath(rest);
            return new Node(Kind.IMAGE_ENTRY, rest);
        }
        if (top.equals(JOURNALS)) {
            if (parts.length == 1) {
                return JOURNALS_NODE;
            }
            if (parts.length > 2) {
                throw new FsException(Native.ENOENT, "no folders in /" + JOURNALS + ": " + path);
            }
            return new Node(Kind.JOURNAL, parts[1]);
        }
        throw new FsException(Native.ENOENT, "no such entry: " + path);
    }

    /**
     * Checks a path under images/ ("tenant1/vm7/disk.qcow2", as the command line names an image):
     * every component a safe name, within the depth and length limits; throws with the reason.
     */
    public static void checkImagePath(String path) throws FsException {
        if (path == null || path.isEmpty()) {
            throw new FsException(Native.EINVAL, "empty image path");
        }
        String[] parts = path.split("/", -1);
        for (String part : parts) {
            checkName(part);
        }
        if (parts.length > MAX_DEPTH) {
            throw new FsException(Native.ENAMETOOLONG, "deeper than " + MAX_DEPTH + " levels under images/: "
                    + printable(path));
        }
        if (path.getBytes(StandardCharsets.UTF_8).length > MAX_PATH) {
            throw new FsException(Native.ENAMETOOLONG, "a path under images/ longer than " + MAX_PATH + " bytes");
        }
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

    /**
     * Checks a name a user gives something new (an image, a folder, a journal device): a safe
     * component, and not libfuse's hidden name (such a file would be out of listings, and removed
     * at the next mount as a crash's leftover).
     */
    public static void checkNewName(String name) throws FsException {
        checkName(name);
        if (name.startsWith(HIDDEN_PREFIX)) {
            throw new FsException(Native.EPERM, "names beginning " + HIDDEN_PREFIX + " are libfuse's: "
                    + printable(name));
        }
    }

    /**
     * As {@link #checkNewName}, for a name typed on the command line: no control characters
     * either (the mount takes any name POSIX does, and tables and logs escape them; a command is
     * where such a name is a typing mistake).
     */
    public static void checkTypedName(String name) throws FsException {
        checkNewName(name);
        if (name.chars().anyMatch(c -> c < 0x20 || c == 0x7f)) {
            throw new FsException(Native.EINVAL, "a name given to vmfuse may not hold control characters: "
                    + printable(name));
        }
    }

    /** The last component of a path under images/ (the whole name of a journal device). */
    public static String leaf(String path) {
        return path.substring(path.lastIndexOf('/') + 1);
    }

    /** The folder of a path under images/, "" for one at the top of images/. */
    public static String folder(String path) {
        int slash = path.lastIndexOf('/');
        return slash < 0 ? "" : path.substring(0, slash);
    }

    /** Whether a path under images/ is {@code folder} itself or lies inside it. */
    public static boolean within(String path, String folder) {
        return path.equals(folder) || path.startsWith(folder + "/");
    }

    /** Whether the last component is libfuse's hidden name for a file unlinked while open. */
    public static boolean hidden(String path) {
        return leaf(path).startsWith(HIDDEN_PREFIX);
    }

    private static String printable(String s) {
        return s.replace("\0", "\\0");
    }
}
