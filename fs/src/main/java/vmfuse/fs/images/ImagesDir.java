package vmfuse.fs.images;

import static vmfuse.fs.nativeio.Native.*;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.SortedMap;
import java.util.TreeMap;

import jnr.ffi.Pointer;
import vmfuse.fs.FsException;
import vmfuse.fs.Node;
import vmfuse.fs.nativeio.LibC;
import vmfuse.fs.nativeio.Native;
import vmfuse.fs.nativeio.StructStat;

/**
 * The backing directory of the images, STORE/images, and the one place that opens, stats,
 * makes, renames and removes its files and folders.
 *
 * <p>Every call is relative to a directory descriptor held for the life of the mount, with paths
 * already checked by {@link Node} ("tenant1/vm7/disk.qcow2"). A path is walked one folder at a
 * time ({@code openat} with O_NOFOLLOW|O_DIRECTORY, as the kernel's RESOLVE_NO_SYMLINKS would, on
 * any kernel), and its last component is used relative to its folder's descriptor
 * ({@code openat}, {@code fstatat}, {@code renameat}, ...) without following it. So nothing
 * placed in the store redirects a call outside it: an entry that is neither a regular file nor
 * a directory is not shown, and cannot be opened or walked through.
 */
public final class ImagesDir implements AutoCloseable {
    private static final LibC C = LibC.INSTANCE;

    private final Path imagesDir;
    private final int dirFd;

    private ImagesDir(Path imagesDir, int dirFd) {
        this.imagesDir = imagesDir;
        this.dirFd = dirFd;
    }

    /** Opens STORE/images, which must exist and be a directory. */
    public static ImagesDir open(Path imagesDir) throws FsException {
        int fd = C.open(imagesDir.toString(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (fd < 0) {
            throw FsException.fromErrno(Native.errno(), "open", imagesDir.toString());
        }
        return new ImagesDir(imagesDir, fd);
    }

    public Path imagesDir() {
        return imagesDir;
    }

    /**
     * The folder holding a path's last component, opened by a walk that follows no symlink, and
     * that component. Closing it closes the folder's descriptor (not images/ itself).
     */
    private final class Parent implements AutoCloseable {
        final int fd;
        final String leaf;

        Parent(String path) throws FsException {
            this.leaf = Node.leaf(path);
            this.fd = walk(Node.folder(path), O_PATH);
        }

        @Override
        public void close() {
            if (fd != dirFd) {
                C.close(fd);
            }
        }
    }

    /** Opens folder {@code folder} ("" for images/ itself) with {@code flags}, walking without following symlinks. */
    private int walk(String folder, int flags) throws FsException {
        if (folder.isEmpty()) {
            return dirFd;
        }
        int fd = dirFd;
        String[] parts = folder.split("/");
        for (int i = 0; i < parts.length; i++) {
            int how = (i == parts.length - 1 ? flags : O_PATH) | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
            int next = C.openat(fd, parts[i], how, 0);
            int errno = next < 0 ? Native.errno() : 0;
            if (next < 0 && errno == ENOTDIR && !isFile(fd, parts[i])) {
                errno = ENOENT; // a symlink (ENOTDIR with O_NOFOLLOW|O_DIRECTORY), a socket: not shown, not walked
            }
            if (fd != dirFd) {
                C.close(fd);
            }
            if (next < 0) {
                throw FsException.fromErrno(errno == ELOOP ? ENOENT : errno, "open folder", folder);
            }
            fd = next;
        }
        return fd;
    }

    /** Whether {@code name} in folder {@code fd} is a regular file (not followed). */
    private static boolean isFile(int fd, String name) {
        Pointer st = StructStat.allocate();
        return C.fstatat(fd, name, st, AT_SYMLINK_NOFOLLOW) == 0 && StructStat.type(st) == S_IFREG;
    }

    /**
     * A descriptor of folder {@code folder} ("" for images/ itself), the caller's to close: what
     * an open directory lists and syncs, under whatever name the folder has by then.
     */
    public int openFolder(String folder) throws FsException {
        if (folder.isEmpty()) {
            int fd = C.dup(dirFd);
            if (fd < 0) {
                throw FsException.fromErrno(Native.errno(), "dup", imagesDir.toString());
            }
            return fd;
        }
        return walk(folder, O_RDONLY);
    }

    /**
     * Opens an existing image for I/O. O_DIRECT is stripped (FUSE's buffers are not aligned, see
     * README "cache=none"); O_CREAT and O_EXCL are the kernel's business on open and dropped;
     * O_NOFOLLOW and O_CLOEXEC are added. Returns the backing descriptor.
     */
    public int openImage(String name, int flags) throws FsException {
        int backing = (flags & ~(O_DIRECT | O_CREAT | O_EXCL | O_NOCTTY)) | O_NOFOLLOW | O_CLOEXEC;
        try (Parent p = new Parent(name)) {
            int fd = C.openat(p.fd, p.leaf, backing, 0);
            if (fd < 0) {
                throw FsException.fromErrno(Native.errno(), "open", name);
            }
            return checkRegular(fd, name);
        }
    }

    /** Creates an image (or opens it, as open(2) with O_CREAT does) and returns the backing descriptor. */
    public int createImage(String name, int flags, int mode) throws FsException {
        int backing = (flags & ~(O_DIRECT | O_NOCTTY)) | O_CREAT | O_NOFOLLOW | O_CLOEXEC;
        try (Parent p = new Parent(name)) {
            int fd = C.openat(p.fd, p.leaf, backing, mode & 07777);
            if (fd < 0) {
                throw FsException.fromErrno(Native.errno(), "create", name);
            }
            return checkRegular(fd, name);
        }
    }

    private int checkRegular(int fd, String name) throws FsException {
        Pointer st = StructStat.allocate();
        if (StructStat.fstat(fd, st) != 0 || StructStat.type(st) != S_IFREG) {
            boolean folder = StructStat.type(st) == S_IFDIR;
            C.close(fd);
            throw new FsException(folder ? EISDIR : EACCES, (folder ? "a folder, not an image: "
                    : "not a regular file in the store: ") + name);
        }
        return fd;
    }

    /**
     * Fills the kernel struct stat at {@code statbuf} for an image or a folder ("" for images/
     * itself); ENOENT for anything else.
     */
    public void stat(String path, Pointer statbuf) throws FsException {
        if (path.isEmpty()) {
            if (C.fstat(dirFd, statbuf) != 0) {
                throw FsException.fromErrno(Native.errno(), "stat", imagesDir.toString());
            }
            return;
        }
        try (Parent p = new Parent(path)) {
            if (C.fstatat(p.fd, p.leaf, statbuf, AT_SYMLINK_NOFOLLOW) != 0) {
                throw FsException.fromErrno(Native.errno(), "stat", path);
            }
        }
        int type = StructStat.type(statbuf);
        if (type != S_IFREG && type != S_IFDIR) {
            throw new FsException(ENOENT, "neither an image nor a folder in the store: " + path);
        }
    }

    /** Whether {@code path} is a folder ("" is images/ itself). */
    public boolean isFolder(String path) throws FsException {
        Pointer st = StructStat.allocate();
        stat(path, st);
        return StructStat.type(st) == S_IFDIR;
    }

    /** Whether an image (a regular file) of that name is in the store. */
    public boolean exists(String name) {
        return usage(name) != null;
    }

    /** Size and allocated bytes of an image, or null if it does not exist (or is a folder). */
    public StructStat.Usage usage(String name) {
        Pointer st = StructStat.allocate();
        try {
            stat(name, st);
        } catch (FsException e) {
            return null;
        }
        return StructStat.type(st) == S_IFREG ? StructStat.usage(st) : null;
    }

    /** The kinds of entries shown: images, libfuse's hidden names of images still open, folders. */
    private static final int IMAGES = 1;
    private static final int HIDDEN = 2;
    private static final int FOLDERS = 4;

    /** One entry of a folder: its name and kind (IMAGES, HIDDEN or FOLDERS). */
    private record Entry(String name, int kind) {}

    /** What a folder ("" for images/) holds: its images and folders, sorted, hidden ones left out. */
    public List<String> list(String folder) throws FsException {
        return names(entries(folder), IMAGES | FOLDERS);
    }

    /** The names of {@code entries} of the kinds {@code wanted}. */
    private static List<String> names(List<Entry> entries, int wanted) {
        List<String> out = new ArrayList<>();
        for (Entry e : entries) {
            if ((e.kind() & wanted) != 0) {
                out.add(e.name());
            }
        }
        return out;
    }

    /** The entries of a folder that are shown or hidden images or folders, sorted by name: one read of it. */
    private List<Entry> entries(String folder) throws FsException {
        int fd = walk(folder, O_RDONLY);
        try {
            return entries(fd);
        } finally {
            if (fd != dirFd) {
                C.close(fd);
            }
        }
    }

    /** What the open folder {@code fd} (see {@link #openFolder}) holds: its images and folders, sorted. */
    public List<String> list(int fd) throws FsException {
        return names(entries(fd), IMAGES | FOLDERS);
    }

    private List<Entry> entries(int fd) throws FsException {
        List<Entry> names = new ArrayList<>();
        try (DirectoryStream<Path> dir = Files.newDirectoryStream(Path.of("/proc/self/fd/" + fd))) {
            Pointer st = StructStat.allocate();
            for (Path p : dir) {
                String name = p.getFileName().toString();
                if (C.fstatat(fd, name, st, AT_SYMLINK_NOFOLLOW) != 0) {
                    continue; // gone since
                }
                int kind = switch (StructStat.type(st)) {
                    case S_IFREG -> name.startsWith(Node.HIDDEN_PREFIX) ? HIDDEN : IMAGES;
                    case S_IFDIR -> FOLDERS;
                    default -> 0; // symlinks, devices, sockets, fifos: not shown
                };
                if (kind != 0) {
                    names.add(new Entry(name, kind));
                }
            }
        } catch (IOException e) {
            throw new FsException(EIO, "cannot list a folder of " + imagesDir + ": " + e.getMessage());
        }
        names.sort(Comparator.comparing(Entry::name));
        return names;
    }

    /** Every image at any depth, as paths under images/, sorted: the hidden ones only, or every other. */
    public List<String> images(boolean hidden) throws FsException {
        List<String> out = new ArrayList<>();
        collect("", 1, hidden ? HIDDEN : IMAGES, out);
        out.sort(null);
        return out;
    }

    /** Every image at any depth, hidden ones left out. */
    public List<String> images() throws FsException {
        return images(false);
    }

    /**
     * Every image at any depth with its size and allocated bytes, by name in order (status and
     * metrics); one gone between the listing and its stat is left out.
     */
    public SortedMap<String, StructStat.Usage> usages() throws FsException {
        SortedMap<String, StructStat.Usage> out = new TreeMap<>();
        for (String name : images()) {
            StructStat.Usage u = usage(name);
            if (u != null) {
                out.put(name, u);
            }
        }
        return out;
    }

    /** Adds the entries of kinds {@code wanted} at and below {@code folder}; a folder gone meanwhile holds none. */
    private void collect(String folder, int depth, int wanted, List<String> out) throws FsException {
        String prefix = folder.isEmpty() ? "" : folder + "/";
        List<Entry> entries;
        try {
            entries = entries(folder);
        } catch (FsException e) {
            if (!folder.isEmpty() && (e.errno() == ENOENT || e.errno() == ENOTDIR)) {
                return; // removed or renamed since its parent was listed
            }
            throw e;
        }
        for (String name : names(entries, wanted & ~FOLDERS)) {
            out.add(prefix + name);
        }
        for (String name : names(entries, FOLDERS)) {
            if ((wanted & FOLDERS) != 0) {
                out.add(prefix + name);
            }
            if (depth < Node.MAX_DEPTH) {
                collect(prefix + name, depth + 1, wanted, out);
            }
        }
    }

    /**
     * Everything at and below folder {@code folder}, as paths relative to it: images, hidden
     * names and folders (what a rename of the folder moves).
     */
    public List<String> tree(String folder) throws FsException {
        List<String> out = new ArrayList<>();
        collect(folder, folder.split("/").length + 1, IMAGES | HIDDEN | FOLDERS, out);
        List<String> relative = new ArrayList<>(out.size());
        for (String p : out) {
            relative.add(p.substring(folder.length() + 1));
        }
        return relative;
    }

    /** Makes a folder, owned by {@code uid}:{@code gid}. */
    public void mkdir(String path, int mode, int uid, int gid) throws FsException {
        try (Parent p = new Parent(path)) {
            if (C.mkdirat(p.fd, p.leaf, mode & 07777) != 0) {
                throw FsException.fromErrno(Native.errno(), "mkdir", path);
            }
            if ((uid != 0 || gid != 0) && C.fchownat(p.fd, p.leaf, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
                int errno = Native.errno();
                C.unlinkat(p.fd, p.leaf, AT_REMOVEDIR);
                throw FsException.fromErrno(errno, "chown", path);
            }
        }
    }

    /** Removes an empty folder. */
    public void rmdir(String path) throws FsException {
        try (Parent p = new Parent(path)) {
            if (C.unlinkat(p.fd, p.leaf, AT_REMOVEDIR) != 0) {
                throw FsException.fromErrno(Native.errno(), "rmdir", path);
            }
        }
    }

    /** Whether a folder holds nothing but libfuse's hidden names of images still open. */
    public boolean holdsOnlyHidden(String folder) throws FsException {
        List<Entry> entries = entries(folder);
        return names(entries, IMAGES | FOLDERS).isEmpty() && !names(entries, HIDDEN).isEmpty();
    }

    public void unlink(String name) throws FsException {
        try (Parent p = new Parent(name)) {
            if (C.unlinkat(p.fd, p.leaf, 0) != 0) {
                throw FsException.fromErrno(Native.errno(), "unlink", name);
            }
        }
    }

    /**
     * fsync of an open folder (see {@link #openFolder}): every create, rename and unlink in it so
     * far survives a host crash.
     */
    public void syncDir(int fd) throws FsException {
        if (C.fsync(fd) != 0) {
            throw FsException.fromErrno(Native.errno(), "fsync", "a folder of " + imagesDir);
        }
    }

    /** Renames an image or a folder, within a folder or between two. */
    public void rename(String from, String to) throws FsException {
        rename(from, to, 0);
    }

    /** As {@link #rename}, but EEXIST if {@code to} exists: nothing is replaced. */
    public void renameNoReplace(String from, String to) throws FsException {
        rename(from, to, RENAME_NOREPLACE);
    }

    private void rename(String from, String to, int flags) throws FsException {
        try (Parent a = new Parent(from); Parent b = new Parent(to)) {
            if (C.renameat2(a.fd, a.leaf, b.fd, b.leaf, flags) != 0) {
                throw FsException.fromErrno(Native.errno(), "rename", from + " to " + to);
            }
        }
    }

    private static final int RENAME_NOREPLACE = 1;

    /** chmod of an image or a folder ("" for images/ itself: who may create images there). */
    public void chmod(String path, int mode) throws FsException {
        if (path.isEmpty()) {
            if (C.fchmod(dirFd, mode & 07777) != 0) {
                throw FsException.fromErrno(Native.errno(), "chmod", imagesDir.toString());
            }
            return;
        }
        // fchmodat cannot be told not to follow a symlink: the entry is opened (O_PATH, not
        // followed), checked, and changed through its descriptor, so a swap in between changes nothing
        try (Parent p = new Parent(path)) {
            int fd = C.openat(p.fd, p.leaf, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
            if (fd < 0) {
                throw FsException.fromErrno(Native.errno(), "chmod", path);
            }
            try {
                Pointer st = StructStat.allocate();
                int type = StructStat.fstat(fd, st) == 0 ? StructStat.type(st) : 0;
                if (type != S_IFREG && type != S_IFDIR) {
                    throw new FsException(ENOENT, "neither an image nor a folder in the store: " + path);
                }
                if (C.chmod("/proc/self/fd/" + fd, mode & 07777) != 0) {
                    throw FsException.fromErrno(Native.errno(), "chmod", path);
                }
            } finally {
                C.close(fd);
            }
        }
    }

    /** chown of an image or a folder ("" for images/ itself). */
    public void chown(String path, int uid, int gid) throws FsException {
        if (path.isEmpty()) {
            if (C.fchown(dirFd, uid, gid) != 0) {
                throw FsException.fromErrno(Native.errno(), "chown", imagesDir.toString());
            }
            return;
        }
        try (Parent p = new Parent(path)) {
            if (C.fchownat(p.fd, p.leaf, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
                throw FsException.fromErrno(Native.errno(), "chown", path);
            }
        }
    }

    /** Sets atime and mtime from a struct timespec[2] (UTIME_NOW and UTIME_OMIT pass through). */
    public void utimens(String path, Pointer times) throws FsException {
        try (Parent p = new Parent(path)) {
            if (C.utimensat(p.fd, p.leaf, times, AT_SYMLINK_NOFOLLOW) != 0) {
                throw FsException.fromErrno(Native.errno(), "utimens", path);
            }
        }
    }

    /** Fills a struct statvfs with the backing filesystem's figures. */
    public void statfs(Pointer statvfsbuf) throws FsException {
        if (C.fstatvfs(dirFd, statvfsbuf) != 0) {
            throw FsException.fromErrno(Native.errno(), "statvfs", imagesDir.toString());
        }
    }

    /** syncfs(2) on the backing filesystem: everything written through the mount reaches stable storage. */
    public void syncAll() throws FsException {
        if (C.syncfs(dirFd) != 0) {
            throw FsException.fromErrno(Native.errno(), "syncfs", imagesDir.toString());
        }
    }

    @Override
    public void close() {
        C.close(dirFd);
    }
}
