package vmfuse.fs.mount;

import static vmfuse.fs.nativeio.Native.*;

import java.io.IOException;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Predicate;

import jnr.ffi.Pointer;
import jnr.ffi.Struct;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import ru.serce.jnrfuse.FuseFillDir;
import ru.serce.jnrfuse.FuseStubFS;
import ru.serce.jnrfuse.struct.FileStat;
import ru.serce.jnrfuse.struct.FuseFileInfo;
import ru.serce.jnrfuse.struct.Statvfs;
import ru.serce.jnrfuse.struct.Timespec;
import vmfuse.fs.FsException;
import vmfuse.fs.Node;
import vmfuse.fs.images.ImageFiles;
import vmfuse.fs.images.ImagesDir;
import vmfuse.fs.journals.JournalFiles;
import vmfuse.fs.nativeio.LibC;
import vmfuse.fs.space.HolePuncher;
import vmfuse.fs.volume.Door;
import vmfuse.fs.volume.ImageVolume;
import vmfuse.fs.volume.JournalVolume;
import vmfuse.fs.volume.Volume;
import vmfuse.reclaimer.ImageHold;
import vmfuse.reclaimer.WriteTracker;

/**
 * The FUSE door: the namespace of {@link Node} and the callbacks, each a translation of the
 * kernel's request into a call on an open {@link Volume} (an image or a journal device), on the
 * {@link ImageFiles} or on the {@link JournalFiles}, as libfuse's passthrough_hp.cc keeps its
 * callbacks to a few lines over per-file state. Every callback goes through {@link #call}, which
 * answers {@code -errno} and logs a failure once; no exception reaches jnr-fuse.
 *
 * <p>An open's volume is found by {@code fi->fh}, a number this door gives out, and so is an open
 * directory (readdir and fsyncdir come without a path: see FuseLoop.mount).
 */
public final class VmFuseFs extends FuseStubFS {
    private static final Logger log = LoggerFactory.getLogger(VmFuseFs.class);
    private static final LibC C = LibC.INSTANCE;

    /** fallocate modes passed on: the ones QEMU, the loop driver and fallocate(1) send. */
    private static final int MODE_ALLOCATE = 0;
    private static final int MODE_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
    private static final int MODE_PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    private static final int MODE_ZERO = FALLOC_FL_ZERO_RANGE;
    private static final int MODE_ZERO_KEEP = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

    /** struct fuse_bufvec with one struct fuse_buf (fuse_common.h, libfuse 2.9, x86_64). */
    private static final int BUFVEC_SIZE = 64;
    private static final int FUSE_BUF_IS_FD = 1 << 1;
    private static final int FUSE_BUF_FD_SEEK = 1 << 2;
    private static final int FUSE_BUF_FD_RETRY = 1 << 3;
    /** Reads larger than this are spliced (see read_buf). */
    private static final long SPLICE_MIN = 32 * 1024;

    private final ImagesDir dir;
    private final ImageFiles images;
    private final JournalFiles journals;
    private final HolePuncher puncher;
    /** Open volumes by fh. */
    private final Map<Long, Volume> volumes = new ConcurrentHashMap<>();
    /**
     * Open directories by fh: readdir, fsyncdir and releasedir come without a path. A folder of
     * images keeps its descriptor, so it lists and syncs what it is after a rename of it or of a
     * folder above it (-1 for the namespace's own directories).
     */
    private record Dir(Node node, int fd) {}

    private final Map<Long, Dir> dirs = new ConcurrentHashMap<>();
    /** fh numbers of opens; never reused while the mount lives. */
    private final AtomicLong nextFh = new AtomicLong(1);
    private final CountDownLatch mounted = new CountDownLatch(1);
    /*
     * Hiding. libfuse 2 keeps an open file that is unlinked, or replaced by a rename, reachable by
     * first renaming it to ".fuse_hiddenNNN" (with hard_remove it cannot even fstat it), and
     * unlinks that name after the last close. For rename(a, b) onto an open b it hides b, then
     * renames a to b, and does not undo the hide if that rename fails. So a hide is a rename in
     * the store (images and journal devices alike), undone if the rename that follows it on the
     * same thread, for the same caller and name, is refused: a refused rename changes nothing
     * (before, the hide unlinked b at once, and `mv x vm1.raw` refused with EBUSY deleted vm1.raw).
     * What can be known at the hide is decided there: a running VM's image is neither unlinked nor
     * replaced. Hidden names are never listed; the space they hold is released, and counted, at
     * libfuse's unlink after the last close; a crash's leftovers are removed at the next mount.
     */
    /** A hide this thread just made: kind, name, hidden name, caller's pid. */
    private record Hide(Node.Kind kind, String name, String hiddenAs, long pid) {
        boolean before(Node to, long callerPid) {
            return kind == to.kind() && name.equals(to.name()) && pid == callerPid;
        }
    }

    /**
     * The hide this thread made, if its next call is the rename libfuse makes right after it (any
     * other call clears it: see {@link #call}).
     */
    private static final ThreadLocal<Hide> LAST_HIDE = new ThreadLocal<>();

    /** The FUSE door to the core: the images (in {@code dir}) and journal devices, and the one puncher. */
    public VmFuseFs(ImagesDir dir, ImageFiles images, JournalFiles journals, HolePuncher puncher) {
        this.dir = dir;
        this.puncher = puncher;
        this.images = images;
        this.journals = journals;
    }

    /**
     * Removes what libfuse hid for open files that a crash (or kill) closed: images and devices
     * unlinked or replaced while open, whose last close never came. Called at mount, before the
     * kernel asks anything.
     */
    public void dropHidden() throws FsException {
        for (String name : dir.images(true)) {
            images.remove(name);
            log.info("removed image={} left hidden by a daemon that did not see its last close", name);
        }
        int devices = journals.dropHidden();
        if (devices > 0) {
            log.info("removed {} journal device(s) left hidden by a daemon that did not see their last close", devices);
        }
    }

    /** The one place that punches (and counts what it freed). */
    public HolePuncher puncher() {
        return puncher;
    }

    /**
     * The reclaimer's write trackers, by image name (writes to those images go through them), and
     * where VMs' images are: true for a VM's image and for a folder holding one (neither may be
     * renamed, replaced or removed).
     */
    public void writeTrackers(Map<String, WriteTracker> byImage, Predicate<String> vmImage) {
        images.watch(byImage, vmImage);
    }

    /** Commits the journal devices (the daemon's timer for devices of durability close). */
    public void checkpointJournals() throws FsException {
        journals.checkpoint();
    }

    /**
     * Mounts and runs the FUSE loop on {@code threads} threads until the mount goes away; returns
     * 0, or 1 if libfuse could not mount. Calls libfuse directly rather than jnr-fuse's mount(),
     * which adds a shutdown hook that lazily unmounts (the daemon owns the mount's lifecycle) and
     * serves requests on native threads (see {@link FuseLoop}).
     */
    public int run(String mountPoint, List<String> options, int threads) {
        return FuseLoop.mount(Struct.getMemory(fuseOperations), Struct.size(fuseOperations), fsyncdirCallback,
                mountPoint, options, threads);
    }

    /** Counted down when the kernel's INIT has been answered: the mount is live. */
    public CountDownLatch mountedLatch() {
        return mounted;
    }

    /** Open images and how many opens each has, for status. */
    public Map<String, Integer> openCounts() {
        return images.openCounts();
    }

    /** The reclaimer's {@link ImageHold}: see {@link ImageFiles#whileClosed}. */
    public boolean whileClosed(String name, ImageHold.Action action) throws IOException {
        return images.whileClosed(name, action);
    }

    @FunctionalInterface
    private interface Op {
        int run() throws FsException;
    }

    /** Runs one operation; maps its failure to -errno and logs it once with the operation and path. */
    private static int call(String op, String path, Op body) {
        if (!"rename".equals(op)) {
            LAST_HIDE.remove(); // a hide not followed at once by a rename was for an unlink
        }
        try {
            return body.run();
        } catch (FsException e) {
            int errno = e.errno();
            if (errno == ENOENT || errno == EAGAIN) {
                log.debug("op={} path={} errno={} {} {}", op, path, errno, errnoName(errno), e.getMessage());
            } else {
                log.warn("op={} path={} errno={} {} {}", op, path, errno, errnoName(errno), e.getMessage());
            }
            return -errno;
        } catch (RuntimeException | Error e) {
            log.error("op={} path={} failed unexpectedly", op, path, e);
            return -EIO;
        }
    }

    private static Node node(String path) throws FsException {
        return Node.resolve(path);
    }

    /** The image (or folder: the store tells) or journal device a path names; EISDIR for the namespace's directories. */
    private static Node fileNode(String path) throws FsException {
        Node n = node(path);
        if (n.kind() == Node.Kind.IMAGE_ENTRY || n.kind() == Node.Kind.JOURNAL) {
            return n;
        }
        throw new FsException(EISDIR, "is a directory: " + path);
    }

    /** The path under images/ of an image or folder ("" for images/ itself); EPERM for anything else. */
    private static String imagesPath(String path) throws FsException {
        Node n = node(path);
        return switch (n.kind()) {
            case IMAGE_ENTRY, IMAGES_DIR -> n.name();
            default -> throw new FsException(EPERM, "neither an image nor a folder of images: " + path);
        };
    }

    /** Where a new file or folder is asked for: only in images/ and journals/. */
    private static Node newFileNode(String path) throws FsException {
        int slash = path.lastIndexOf('/');
        String parent = slash <= 0 ? "/" : path.substring(0, slash);
        if (parent.equals("/")) {
            throw new FsException(EPERM, "only images/ and journals/ live at the top of the mount: " + path);
        }
        Node n = node(path);
        if (n.kind() != Node.Kind.IMAGE_ENTRY && n.kind() != Node.Kind.JOURNAL) {
            throw new FsException(EEXIST, "exists: " + path);
        }
        Node.checkNewName(Node.leaf(n.name()));
        return n;
    }

    /** The open volume of {@code fi->fh}. */
    private Volume volume(FuseFileInfo fi) throws FsException {
        Volume v = volumes.get(fi.fh.get());
        if (v == null) {
            throw new FsException(EBADF, "no open file for fh " + fi.fh.get());
        }
        return v;
    }

    /** Gives an open volume its fh. */
    private int opened(Volume v, FuseFileInfo fi) {
        long fh = nextFh.getAndIncrement();
        volumes.put(fh, v);
        fi.fh.set(fh);
        return 0;
    }

    // ---- callbacks -------------------------------------------------------------------------

    /** Marks the mount live once the kernel's INIT is answered. */
    @Override
    public Pointer init(Pointer conn) {
        mounted.countDown();
        return null;
    }

    /** stat of a directory of the namespace, an image's backing file or a journal device. */
    @Override
    public int getattr(String path, FileStat stat) {
        return call("getattr", path, () -> {
            Node n = node(path);
            Pointer st = Struct.getMemory(stat);
            switch (n.kind()) {
                case IMAGE_ENTRY, IMAGES_DIR -> dir.stat(n.name(), st);
                case JOURNAL -> journals.stat(n.name(), st);
                case ROOT, JOURNALS_DIR -> {
                    dir.stat("", st);
                    stat.st_mode.set(S_IFDIR | 0755);
                }
            }
            return 0;
        });
    }

    /** stat of an open file (also after it was unlinked). */
    @Override
    public int fgetattr(String path, FileStat stat, FuseFileInfo fi) {
        Volume v = volumes.get(fi.fh.get());
        if (v == null) {
            return path != null ? getattr(path, stat) : -EBADF;
        }
        return call("fgetattr", path, () -> {
            v.stat(Struct.getMemory(stat));
            return 0;
        });
    }

    /** Opens a directory: the namespace's, or a folder of images. */
    @Override
    public int opendir(String path, FuseFileInfo fi) {
        return call("opendir", path, () -> {
            Node n = node(path);
            if (n.kind() == Node.Kind.JOURNAL || n.kind() == Node.Kind.IMAGE_ENTRY && !dir.isFolder(n.name())) {
                throw new FsException(ENOTDIR, "not a directory: " + path);
            }
            boolean images = n.kind() == Node.Kind.IMAGE_ENTRY || n.kind() == Node.Kind.IMAGES_DIR;
            long fh = nextFh.getAndIncrement();
            dirs.put(fh, new Dir(n, images ? dir.openFolder(n.name()) : -1));
            fi.fh.set(fh);
            return 0;
        });
    }

    @Override
    public int releasedir(String path, FuseFileInfo fi) {
        return call("releasedir", path, () -> {
            Dir d = dirs.remove(fi.fh.get());
            if (d == null) {
                throw new FsException(EBADF, "no open directory for fh " + fi.fh.get());
            }
            if (d.fd() >= 0) {
                C.close(d.fd());
            }
            return 0;
        });
    }

    /** The open directory of {@code fi->fh}. */
    private Dir dir(FuseFileInfo fi) throws FsException {
        Dir d = dirs.get(fi.fh.get());
        if (d == null) {
            throw new FsException(EBADF, "no open directory for fh " + fi.fh.get());
        }
        return d;
    }

    /** Lists the namespace: images/ and journals/ at the top, images and folders in images/, the devices. */
    @Override
    public int readdir(String path, Pointer buf, FuseFillDir filter, long offset, FuseFileInfo fi) {
        return call("readdir", path, () -> {
            Dir d = dir(fi);
            filter.apply(buf, ".", null, 0);
            filter.apply(buf, "..", null, 0);
            List<String> names = switch (d.node().kind()) {
                case ROOT -> List.of(Node.IMAGES, Node.JOURNALS);
                case IMAGES_DIR, IMAGE_ENTRY -> dir.list(d.fd());
                case JOURNALS_DIR -> journals.list();
                case JOURNAL -> throw new FsException(ENOTDIR, "not a directory");
            };
            for (String name : names) {
                if (filter.apply(buf, name, null, 0) != 0) {
                    break;
                }
            }
            return 0;
        });
    }

    /** Creates an image (owned by the caller) or a journal device, and opens it. */
    @Override
    public int create(String path, long mode, FuseFileInfo fi) {
        return call("create", path, () -> {
            Node n = newFileNode(path);
            if (n.kind() == Node.Kind.JOURNAL) {
                return opened(journals.create(n.name()), fi);
            }
            return opened(images.create(n.name(), fi.flags.get(), (int) mode, (int) getContext().uid.get(),
                    (int) getContext().gid.get()), fi);
        });
    }

    /** Opens an image (one backing descriptor for the life of this open) or a journal device. */
    @Override
    public int open(String path, FuseFileInfo fi) {
        return call("open", path, () -> {
            Node n = fileNode(path);
            if (n.kind() == Node.Kind.IMAGE_ENTRY) {
                return opened(images.open(n.name(), fi.flags.get(), Door.MOUNT), fi);
            }
            Volume v = journals.open(n.name());
            if ((fi.flags.get() & O_TRUNC) != 0) {
                try {
                    v.truncate(0);
                } catch (FsException e) {
                    v.close();
                    throw e;
                }
            }
            return opened(v, fi);
        });
    }

    @Override
    public int read(String path, Pointer buf, long size, long offset, FuseFileInfo fi) {
        return call("read", path, () -> volume(fi).read(buf, size, offset));
    }

    /**
     * Reads. A large read of an image hands libfuse the backing descriptor and offset instead of
     * data (struct fuse_bufvec with FUSE_BUF_IS_FD): with splice_write, libfuse splices the pages
     * from the backing file to /dev/fuse, with no copy through user space. A small read is one
     * pread into a buffer libfuse writes out: splicing costs three system calls (splice,
     * vmsplice, splice), more than copying {@value #SPLICE_MIN} bytes or less. libfuse frees the
     * bufvec and buffer.
     */
    @Override
    public int read_buf(String path, Pointer bufp, long size, long offset, FuseFileInfo fi) {
        return call("read", path, () -> {
            Volume v = volume(fi);
            Volume.checkRange(offset, size);
            Pointer vec = C.malloc(BUFVEC_SIZE);
            if (vec == null) {
                throw new FsException(ENOMEM, "no memory for a read's buffer vector");
            }
            vec.putLong(0, 1);      // count
            vec.putLong(8, 0);      // idx
            vec.putLong(16, 0);     // off
            vec.putInt(48, -1);     // buf[0].fd
            vec.putLong(56, 0);     // buf[0].pos
            if (size > SPLICE_MIN && v instanceof ImageVolume image) { // a device is no file to splice from
                vec.putLong(24, size);   // buf[0].size
                vec.putInt(32, FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY); // buf[0].flags
                vec.putAddress(40, 0);   // buf[0].mem
                vec.putInt(48, image.fd());
                vec.putLong(56, offset);
                bufp.putPointer(0, vec);
                return 0;
            }
            Pointer mem = C.malloc(Math.max(size, 1));
            if (mem == null) {
                C.free(vec);
                throw new FsException(ENOMEM, "no memory for a read of " + size + " bytes");
            }
            int n;
            try {
                n = v.read(mem, size, offset);
            } catch (FsException | RuntimeException e) {
                C.free(mem);
                C.free(vec);
                throw e;
            }
            vec.putLong(24, n);
            vec.putInt(32, 0);
            vec.putAddress(40, mem.address());
            bufp.putPointer(0, vec);
            return 0;
        });
    }

    @Override
    public int write(String path, Pointer buf, long size, long offset, FuseFileInfo fi) {
        return call("write", path, () -> volume(fi).write(buf, size, offset));
    }

    @Override
    public int flush(String path, FuseFileInfo fi) {
        return call("flush", path, () -> {
            volume(fi).flush();
            return 0;
        });
    }

    /** The guest's flush reaches the backing disk, or the device's redo log. */
    @Override
    public int fsync(String path, int isdatasync, FuseFileInfo fi) {
        return call("fsync", path, () -> {
            volume(fi).sync(isdatasync != 0);
            return 0;
        });
    }

    /**
     * fsync of a directory. images/ or a folder: of its backing directory, so creates, renames and
     * unlinks in it survive a host crash (unanswered, the kernel would take fsync of a directory as
     * done and never ask again). journals/: a device's create, rename and delete are committed
     * before they return, so there is nothing left to sync.
     */
    @Override
    public int fsyncdir(String path, FuseFileInfo fi) {
        return call("fsyncdir", path, () -> {
            Dir d = dir(fi);
            if (d.fd() >= 0) {
                dir.syncDir(d.fd());
            }
            return 0;
        });
    }

    /** Held for the mount's life: the native closure must not be collected while libfuse may call it. */
    private final FuseLoop.FsyncdirCallback fsyncdirCallback = (path, datasync, fi) -> fsyncdir(path, FuseFileInfo.of(fi));

    /** Ends an open; an unlinked image's space returns when its last one closes. */
    @Override
    public int release(String path, FuseFileInfo fi) {
        return call("release", path, () -> {
            Volume v = volumes.remove(fi.fh.get());
            if (v == null) {
                throw new FsException(EBADF, "no open file for fh " + fi.fh.get());
            }
            released(v); // from now: a close-mode device's last close commits it, which takes a while
            v.close();
            released(v);
            if (RELEASE_DELAY_MILLIS > 0) { // tests: widens the moment libfuse still counts it open
                try {
                    Thread.sleep(RELEASE_DELAY_MILLIS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            return 0;
        });
    }

    /** For tests only (-Dvmfuse.test.releaseDelayMillis=N): each release returns N ms late. */
    private static final long RELEASE_DELAY_MILLIS = Long.getLong("vmfuse.test.releaseDelayMillis", 0);

    /**
     * Files a release is closing or closed lately (journals/NAME or images/PATH -> nanoTime).
     * libfuse counts a file open until just after our release returns: an unlink meanwhile (rm
     * right after a losetup -d, whose close comes late; the last close of a close-mode device,
     * which commits it) is made a hide of a file we closed, or are closing. See {@link #hide}.
     */
    private final Map<String, Long> lastReleases = new ConcurrentHashMap<>();
    private static final long RELEASE_GRACE_NANOS = TimeUnit.SECONDS.toNanos(5);

    private void released(Volume v) {
        long now = System.nanoTime();
        lastReleases.values().removeIf(t -> now - t > RELEASE_GRACE_NANOS);
        lastReleases.put(releaseKey(v instanceof JournalVolume ? Node.Kind.JOURNAL : Node.Kind.IMAGE_ENTRY, v.name()), now);
    }

    private boolean releasedLately(Node n) {
        Long t = lastReleases.get(releaseKey(n.kind(), n.name()));
        return t != null && System.nanoTime() - t <= RELEASE_GRACE_NANOS;
    }

    /** A file by its kind and name (libfuse may give a release no path). */
    private static String releaseKey(Node.Kind kind, String name) {
        return (kind == Node.Kind.JOURNAL ? "journals/" : "images/") + name;
    }

    /** truncate by path: shrinking releases the blocks past the new end. */
    @Override
    public int truncate(String path, long size) {
        return call("truncate", path, () -> {
            Volume.checkRange(size, 0);
            Node n = fileNode(path);
            if (n.kind() == Node.Kind.JOURNAL) {
                journals.truncate(n.name(), size);
            } else {
                images.truncate(n.name(), size);
            }
            return 0;
        });
    }

    @Override
    public int ftruncate(String path, long size, FuseFileInfo fi) {
        return call("ftruncate", path, () -> {
            volume(fi).truncate(size);
            return 0;
        });
    }

    /**
     * fallocate, intercepted: PUNCH_HOLE and ZERO_RANGE release the space at once (a guest's
     * discard arrives here through QEMU's discard=unmap); allocation passes through. Modes that
     * move data (COLLAPSE_RANGE, INSERT_RANGE) are refused.
     */
    @Override
    public int fallocate(String path, int mode, long offset, long length, FuseFileInfo fi) {
        return call("fallocate", path, () -> {
            if (length <= 0) {
                throw new FsException(EINVAL, "bad range offset=" + offset + " length=" + length);
            }
            Volume v = volume(fi);
            switch (mode) {
                case MODE_PUNCH -> v.punch(offset, length);
                case MODE_ZERO, MODE_ZERO_KEEP -> v.zero(offset, length, mode == MODE_ZERO_KEEP);
                case MODE_ALLOCATE, MODE_KEEP_SIZE -> v.allocate(offset, length, mode == MODE_KEEP_SIZE);
                default -> throw new FsException(EOPNOTSUPP, "fallocate mode 0x" + Integer.toHexString(mode)
                        + " is not supported");
            }
            return 0;
        });
    }

    /** Removes an image's backing file or a journal device at once; open ones keep it until they close. */
    @Override
    public int unlink(String path) {
        return call("unlink", path, () -> {
            Node n = fileNode(path);
            if (n.kind() == Node.Kind.JOURNAL) {
                journals.unlink(n.name());
                return 0;
            }
            String name = n.name();
            if (Node.hidden(name) && !dir.exists(name)) {
                return 0; // a hide a refused rename undid: nothing is left under the hidden name
            }
            images.remove(name);
            return 0;
        });
    }

    /** The pid of the process whose request this thread serves. */
    private long callerPid() {
        return getContext().pid.get();
    }

    @Override
    public int rename(String oldpath, String newpath) {
        Hide justHidden = LAST_HIDE.get();
        LAST_HIDE.remove();
        return call("rename", oldpath, () -> {
            Node from = node(oldpath);
            Node to = node(newpath);
            if (to.name() != null && !to.name().isEmpty() && Node.hidden(to.name()) && from.kind() == to.kind()) {
                hide(from, to);
                return 0;
            }
            try {
                move(from, to, oldpath, newpath);
            } catch (FsException | RuntimeException e) {
                if (justHidden != null && justHidden.before(to, callerPid())) {
                    unhide(justHidden);
                }
                throw e;
            }
            return 0;
        });
    }

    /**
     * libfuse hiding an open image or device before an unlink of it or a rename onto it: a rename
     * to the hidden name in the store, which a refused rename undoes (see {@link #LAST_HIDE}).
     */
    private void hide(Node from, Node hidden) throws FsException {
        boolean open = from.kind() == Node.Kind.JOURNAL ? journals.isOpen(from.name()) : images.isOpen(from.name());
        // libfuse hides only what it counts open: ours closed a moment ago, or this is someone's
        // rename to a name that is libfuse's (refused: the file would vanish from listings, then
        // from the store at the next mount). Lately released, it is libfuse's hide of a file whose
        // close and unlink crossed: it unlinks the hidden name once its count drops.
        open = open || releasedLately(from);
        if (!open) {
            throw new FsException(EPERM, "names beginning " + Node.HIDDEN_PREFIX + " are libfuse's, for files "
                    + "unlinked while open: " + hidden.name());
        }
        if (from.kind() == Node.Kind.JOURNAL) {
            journals.rename(from.name(), hidden.name());
        } else {
            images.checkNotVm(from.name(), "unlinked or replaced");
            images.rename(from.name(), hidden.name());
            log.info("hide image={} as={}: unlinked or replaced while open; its space returns after the last close",
                    from.name(), hidden.name());
        }
        LAST_HIDE.set(new Hide(from.kind(), from.name(), hidden.name(), callerPid()));
    }

    /**
     * Undoes a hide whose rename was refused: the image or device is back under its name, as it
     * was. Never over another: that hide may have been an unlink's, left on this thread, and what
     * is under the name now is a newer file (found by a review).
     */
    private void unhide(Hide h) {
        try {
            if (h.kind() == Node.Kind.JOURNAL) {
                journals.rename(h.hiddenAs(), h.name(), false);
            } else {
                images.rename(h.hiddenAs(), h.name(), false);
            }
            log.info("rename onto {} refused: it is back from {}", h.name(), h.hiddenAs());
        } catch (FsException | RuntimeException e) {
            log.error("rename onto {} refused, and it cannot be brought back from {}: {}", h.name(), h.hiddenAs(),
                    e.toString());
        }
    }

    /**
     * rename(2) of an image or a folder within images/ (between folders too), or of a device
     * within journals/, every check made before anything moves.
     */
    private void move(Node from, Node to, String oldpath, String newpath) throws FsException {
        if (from.kind() == Node.Kind.JOURNAL && to.kind() == Node.Kind.JOURNAL) {
            journals.rename(from.name(), to.name());
            return;
        }
        if (from.kind() != Node.Kind.IMAGE_ENTRY || to.kind() != Node.Kind.IMAGE_ENTRY) {
            throw new FsException(from.kind() == to.kind() ? EPERM : EXDEV,
                    "rename only within images/ or within journals/: " + oldpath + " -> " + newpath);
        }
        images.checkNotVm(from.name(), "renamed");
        images.checkNotVm(to.name(), "replaced");
        images.rename(from.name(), to.name());
        log.info("rename image={} to={}", from.name(), to.name());
    }

    /** chmod of an image, a folder, images/ (who may create images there), or a journal device. */
    @Override
    public int chmod(String path, long mode) {
        return call("chmod", path, () -> {
            Node n = node(path);
            if (n.kind() == Node.Kind.JOURNAL) {
                journals.chmod(n.name(), (int) mode);
            } else {
                dir.chmod(imagesPath(path), (int) mode);
            }
            return 0;
        });
    }

    /** chown of the same (libvirt gives a VM's disks, journal devices too, to the user QEMU runs as). */
    @Override
    public int chown(String path, long uid, long gid) {
        return call("chown", path, () -> {
            Node n = node(path);
            if (n.kind() == Node.Kind.JOURNAL) {
                journals.chown(n.name(), (int) uid, (int) gid);
            } else {
                dir.chown(imagesPath(path), (int) uid, (int) gid);
            }
            return 0;
        });
    }

    @Override
    public int utimens(String path, Timespec[] timespec) {
        return call("utimens", path, () -> {
            Node n = fileNode(path);
            if (n.kind() == Node.Kind.JOURNAL) {
                journals.check(n.name());
                return 0; // a device's times are its creation and last flush: touch succeeds, changes nothing
            }
            dir.utimens(n.name(), Struct.getMemory(timespec[0]));
            return 0;
        });
    }

    /** The backing filesystem's figures: df on the mount shows the store's disk. */
    @Override
    public int statfs(String path, Statvfs stbuf) {
        return call("statfs", path, () -> {
            dir.statfs(Struct.getMemory(stbuf));
            return 0;
        });
    }

    /** Makes a folder of images, owned by the caller; journals/ has none, and the top is fixed. */
    @Override
    public int mkdir(String path, long mode) {
        return call("mkdir", path, () -> {
            Node n = newFileNode(path);
            if (n.kind() == Node.Kind.JOURNAL) {
                throw new FsException(EPERM, "journals/ holds devices, no folders: " + path);
            }
            images.mkdir(n.name(), (int) mode, (int) getContext().uid.get(), (int) getContext().gid.get());
            return 0;
        });
    }

    /** Removes an empty folder of images; images/ and journals/ stay. */
    @Override
    public int rmdir(String path) {
        return call("rmdir", path, () -> {
            Node n = node(path);
            if (n.kind() != Node.Kind.IMAGE_ENTRY) {
                throw new FsException(n.kind() == Node.Kind.JOURNAL ? ENOTDIR : EPERM,
                        "images/ and journals/ cannot be removed: " + path);
            }
            images.checkNotVm(n.name(), "removed");
            images.rmdir(n.name());
            return 0;
        });
    }

    @Override
    public int symlink(String oldpath, String newpath) {
        return call("symlink", newpath, () -> {
            throw new FsException(EPERM, "no symlinks in the store: " + newpath);
        });
    }

    @Override
    public int link(String oldpath, String newpath) {
        return call("link", newpath, () -> {
            throw new FsException(EPERM, "no hard links in the store: " + newpath);
        });
    }

    @Override
    public int mknod(String path, long mode, long rdev) {
        return call("mknod", path, () -> {
            throw new FsException(EPERM, "only regular files in the store: " + path);
        });
    }

    /** Closes whatever is still open (the kernel releases everything before an unmount completes). */
    public void closeAll() {
        volumes.clear();
        images.closeAll();
        for (Dir d : dirs.values()) {
            if (d.fd() >= 0) {
                C.close(d.fd());
            }
        }
        dirs.clear();
    }
}
