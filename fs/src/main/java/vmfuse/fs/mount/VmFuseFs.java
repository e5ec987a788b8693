package vmfuse.fs.mount;

import static vmfuse.fs.nativeio.Native.*;

import java.io.IOException;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;

import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import jnr.ffi.Struct;
import jnr.ffi.annotations.Delegate;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import ru.serce.jnrfuse.FuseFillDir;
import ru.serce.jnrfuse.FuseStubFS;
import ru.serce.jnrfuse.struct.FileStat;
import ru.serce.jnrfuse.struct.FuseFileInfo;
import ru.serce.jnrfuse.struct.Statvfs;
import ru.serce.jnrfuse.struct.Timespec;
import vmfuse.durable.Parking;
import vmfuse.fs.nativeio.LibC;
import vmfuse.fs.nativeio.Native;
import vmfuse.journal.Durability;
import vmfuse.journal.JournalStore;
import vmfuse.reclaimer.ImageHold;
import vmfuse.reclaimer.WriteTracker;
import vmfuse.fs.FsException;
import vmfuse.fs.Node;
import vmfuse.fs.images.BackingStore;
import vmfuse.fs.images.OpenFile;
import vmfuse.fs.journals.JournalFiles;
import vmfuse.fs.space.HolePuncher;
import vmfuse.fs.space.ReleaseLedger;

/**
 * The FUSE callbacks: the namespace of {@link Node}, images passed through to the
 * {@link BackingStore}, journal devices ({@link JournalFiles}), and the interception of
 * fallocate and unlink that gives space back.
 *
 * <p>Images are modelled on libfuse's passthrough_hp: every open keeps its backing descriptor in
 * {@code fi->fh}, so a write is one pwrite from the kernel's buffer, a read one pread or a
 * splice, and operations on an open (even unlinked) file never look up a path. Every callback
 * returns {@code -errno} of the syscall it wraps, and no exception reaches jnr-fuse.
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
    private static final int ENOMEM = 12;
    /** Reads larger than this are spliced (see read_buf). */
    private static final long SPLICE_MIN = 32 * 1024;

    private final BackingStore store;
    private final HolePuncher puncher;
    private final ReleaseLedger ledger;
    /** Open files by fh, which is the backing descriptor (unique while the file is open). */
    private final Map<Long, OpenFile> open = new ConcurrentHashMap<>();
    /** The write trackers of images VMs' reclaimers watch, by image name (set by the daemon). */
    private volatile Map<String, WriteTracker> trackers = Map.of();
    private volatile java.util.function.Predicate<String> vmImage = name -> false;
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
    private final CountDownLatch mounted = new CountDownLatch(1);
    /**
     * Images the reclaimer holds closed ({@link #whileClosed}); guarded by itself, and so are the
     * opens of images, so that no open slips between the check and the hold. An open of a held
     * image waits, up to HOLD_WAIT_MS, then fails with EBUSY.
     */
    private final Set<String> held = new HashSet<>();
    private static final long HOLD_WAIT_MS = 120_000;

    private final JournalFiles journals;

    public VmFuseFs(BackingStore store, ReleaseLedger ledger, JournalStore journalStore,
            Durability journalDurability) {
        this.store = store;
        this.ledger = ledger;
        this.puncher = new HolePuncher(ledger);
        this.journals = new JournalFiles(journalStore, journalDurability, ledger);
    }

    /**
     * Removes what libfuse hid for open files that a crash (or kill) closed: images and devices
     * unlinked or replaced while open, whose last close never came. Called at mount, before the
     * kernel asks anything.
     */
    public void dropHidden() throws FsException {
        for (String name : store.list(true)) {
            removeImage(name);
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
     * which images are VMs' (they may not be renamed).
     */
    public void writeTrackers(Map<String, WriteTracker> byImage, java.util.function.Predicate<String> vmImage) {
        trackers = byImage;
        this.vmImage = vmImage;
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
        // struct fuse_operations bit field after the 38 classic callbacks (8 bytes each):
        // flag_nullpath_ok (bit 0) and flag_nopath (bit 1): operations on an open file or
        // directory (read, write, flush, fsync, release, ftruncate, fgetattr, readdir) arrive
        // without a path, which libfuse then need not build and jnr need not decode: we use
        // fi->fh only. flag_utime_omit_ok (bit 2): UTIME_NOW/UTIME_OMIT reach utimens unchanged.
        if (Struct.size(fuseOperations) != 360) {
            throw new IllegalStateException("unexpected struct fuse_operations size " + Struct.size(fuseOperations));
        }
        Pointer ops = Struct.getMemory(fuseOperations);
        ops.putInt(38 * 8, 0b111);
        ops.putAddress(FSYNCDIR_SLOT * 8, Runtime.getSystemRuntime().getClosureManager()
                .getClosurePointer(FsyncdirCallback.class, fsyncdirCallback).address());
        String[] args = new String[3 + 2 * options.size()];
        args[0] = "vmfuse";
        args[1] = "-f";
        args[2] = mountPoint;
        for (int i = 0; i < options.size(); i++) {
            args[3 + 2 * i] = "-o";
            args[4 + 2 * i] = options.get(i);
        }
        // up to three spares per thread while requests wait on journal memory or held images
        return FuseLoop.run(args, ops, Struct.size(fuseOperations), threads, 4 * threads);
    }

    /** Counted down when the kernel's INIT has been answered: the mount is live. */
    public CountDownLatch mountedLatch() {
        return mounted;
    }

    /** Open files and their images, for status. */
    public Map<String, Integer> openCounts() {
        Map<String, Integer> counts = new java.util.TreeMap<>();
        for (OpenFile f : open.values()) {
            if (!f.unlinked) {
                counts.merge(f.name, 1, Integer::sum);
            }
        }
        return counts;
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
                log.debug("op={} path={} errno={} {}", op, path, errno, e.getMessage());
            } else {
                log.warn("op={} path={} errno={} {}", op, path, errno, e.getMessage());
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

    /** The image or journal device a path names; EISDIR for a directory. */
    private static Node fileNode(String path) throws FsException {
        Node n = node(path);
        if (n.kind() == Node.Kind.IMAGE || n.kind() == Node.Kind.JOURNAL) {
            return n;
        }
        throw new FsException(EISDIR, "is a directory: " + path);
    }

    private static String imageName(String path) throws FsException {
        Node n = fileNode(path);
        if (n.kind() != Node.Kind.IMAGE) {
            throw new FsException(EPERM, "not an image: " + path);
        }
        return n.name();
    }

    /** Where a new entry is asked for: only in images/ and journals/. */
    private static Node newFileNode(String path) throws FsException {
        int slash = path.lastIndexOf('/');
        String parent = slash <= 0 ? "/" : path.substring(0, slash);
        if (parent.equals("/")) {
            throw new FsException(EPERM, "only images/ and journals/ live at the top of the mount: " + path);
        }
        Node n = node(path);
        if (n.kind() != Node.Kind.IMAGE && n.kind() != Node.Kind.JOURNAL) {
            throw new FsException(EEXIST, "exists: " + path);
        }
        return n;
    }

    private OpenFile file(FuseFileInfo fi) throws FsException {
        OpenFile f = open.get(fi.fh.get());
        if (f == null) {
            throw new FsException(EBADF, "no open file for fh " + fi.fh.get());
        }
        return f;
    }

    /** Opens a backing descriptor. */
    private interface Opener {
        int open() throws FsException;
    }

    /** Opens an image with {@code opener} and registers the open, once the reclaimer does not hold it. */
    private void openImage(String name, FuseFileInfo fi, Opener opener) throws FsException {
        synchronized (held) {
            if (held.contains(name)) {
                awaitRelease(name);
            }
            register(opener.open(), name, fi);
        }
    }

    /** Waits, parked (see {@link Parking}), up to HOLD_WAIT_MS until the reclaimer releases {@code name}. */
    private void awaitRelease(String name) throws FsException {
        assert Thread.holdsLock(held);
        if (!Parking.begin()) {
            throw new FsException(EBUSY, "image " + name + " is held closed by the reclaimer, and too many "
                    + "requests already wait on other subsystems");
        }
        try {
            long deadline = System.nanoTime() + HOLD_WAIT_MS * 1_000_000;
            while (held.contains(name)) {
                long left = (deadline - System.nanoTime()) / 1_000_000;
                if (left <= 0) {
                    throw new FsException(EBUSY, "image " + name + " is held closed by the reclaimer");
                }
                try {
                    held.wait(left);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new FsException(EINTR, "interrupted waiting for the reclaimer to release " + name);
                }
            }
        } finally {
            Parking.end();
        }
    }

    /**
     * Runs {@code action} while no process has image {@code name} open through the mount and none
     * can open it (opens wait); false, without running it, if one has it open. The reclaimer's
     * {@link ImageHold}: it works on the backing file of a qcow2 image no QEMU runs.
     */
    public boolean whileClosed(String name, ImageHold.Action action) throws IOException {
        synchronized (held) {
            for (OpenFile f : open.values()) {
                if (!f.unlinked && name.equals(f.name)) {
                    return false;
                }
            }
            held.add(name);
        }
        try {
            action.run();
            return true;
        } finally {
            synchronized (held) {
                held.remove(name);
                held.notifyAll();
            }
        }
    }

    private OpenFile register(int fd, String name, FuseFileInfo fi) {
        OpenFile f = new OpenFile(fd, name);
        open.put((long) fd, f);
        fi.fh.set(fd);
        return f;
    }

    // ---- callbacks -------------------------------------------------------------------------

    /** Marks the mount live once the kernel's INIT is answered. */
    @Override
    public Pointer init(Pointer conn) {
        mounted.countDown();
        return null;
    }

    /** stat of a directory of the namespace or of an image's backing file. */
    @Override
    public int getattr(String path, FileStat stat) {
        return call("getattr", path, () -> {
            Node n = node(path);
            Pointer st = Struct.getMemory(stat);
            switch (n.kind()) {
                case IMAGE -> store.statImage(n.name(), st);
                case JOURNAL -> journals.stat(n.name(), stat);
                case IMAGES_DIR -> store.statDir(st);
                case ROOT, JOURNALS_DIR -> {
                    store.statDir(st);
                    stat.st_mode.set(S_IFDIR | 0755);
                }
            }
            return 0;
        });
    }

    /** fstat of an open file's backing descriptor (also after it was unlinked). */
    @Override
    public int fgetattr(String path, FileStat stat, FuseFileInfo fi) {
        if (JournalFiles.owns(fi.fh.get())) {
            return call("fgetattr", path, () -> {
                journals.fstat(fi.fh.get(), stat);
                return 0;
            });
        }
        OpenFile f = open.get(fi.fh.get());
        if (f == null) {
            return path != null ? getattr(path, stat) : -EBADF;
        }
        return call("fgetattr", path, () -> {
            if (C.fstat(f.fd, Struct.getMemory(stat)) != 0) {
                throw FsException.fromErrno(Native.errno(), "fstat", f.name);
            }
            return 0;
        });
    }

    /** Opens a directory of the namespace: its kind goes in fi->fh, for readdir (which has no path). */
    @Override
    public int opendir(String path, FuseFileInfo fi) {
        return call("opendir", path, () -> {
            Node n = node(path);
            if (n.kind() == Node.Kind.IMAGE || n.kind() == Node.Kind.JOURNAL) {
                throw new FsException(ENOTDIR, "not a directory: " + path);
            }
            fi.fh.set(n.kind().ordinal());
            return 0;
        });
    }

    /** Lists the namespace: images/ and journals/ at the top, the store's images in images/. */
    @Override
    public int readdir(String path, Pointer buf, FuseFillDir filter, long offset, FuseFileInfo fi) {
        return call("readdir", path, () -> {
            Node.Kind kind = Node.Kind.values()[(int) fi.fh.get()];
            filter.apply(buf, ".", null, 0);
            filter.apply(buf, "..", null, 0);
            switch (kind) {
                case ROOT -> {
                    filter.apply(buf, Node.IMAGES, null, 0);
                    filter.apply(buf, Node.JOURNALS, null, 0);
                }
                case IMAGES_DIR -> {
                    for (String name : store.list()) {
                        if (filter.apply(buf, name, null, 0) != 0) {
                            break;
                        }
                    }
                }
                case JOURNALS_DIR -> {
                    for (String name : journals.list()) {
                        if (filter.apply(buf, name, null, 0) != 0) {
                            break;
                        }
                    }
                }
                default -> throw new FsException(ENOTDIR, "not a directory");
            }
            return 0;
        });
    }

    /** Creates an image in the store, owned by the caller, and opens it. */
    @Override
    public int create(String path, long mode, FuseFileInfo fi) {
        return call("create", path, () -> {
            Node n = newFileNode(path);
            if (n.kind() == Node.Kind.JOURNAL) {
                fi.fh.set(journals.create(n.name()));
                return 0;
            }
            String name = n.name();
            long uid = getContext().uid.get();
            long gid = getContext().gid.get();
            openImage(name, fi, () -> {
                int fd = store.createImage(name, fi.flags.get(), (int) mode);
                if (uid != 0 || gid != 0) {
                    try {
                        store.chown(name, (int) uid, (int) gid);
                    } catch (FsException e) {
                        C.close(fd);
                        throw e;
                    }
                }
                return fd;
            });
            log.info("create image={} mode={}", name, Integer.toOctalString((int) mode & 07777));
            return 0;
        });
    }

    /** Opens an image: one backing descriptor for the life of this open. */
    @Override
    public int open(String path, FuseFileInfo fi) {
        return call("open", path, () -> {
            Node n = fileNode(path);
            if (n.kind() == Node.Kind.JOURNAL) {
                fi.fh.set(journals.open(n.name()));
                if ((fi.flags.get() & O_TRUNC) != 0) {
                    journals.ftruncate(fi.fh.get(), 0);
                }
                return 0;
            }
            openImage(n.name(), fi, () -> store.openImage(n.name(), fi.flags.get()));
            return 0;
        });
    }

    /** One pread (repeated only if the backing file returns short before EOF). */
    @Override
    public int read(String path, Pointer buf, long size, long offset, FuseFileInfo fi) {
        if (JournalFiles.owns(fi.fh.get())) {
            return call("read", path, () -> journals.read(fi.fh.get(), buf, size, offset));
        }
        OpenFile f = open.get(fi.fh.get());
        if (f == null) {
            return -EBADF;
        }
        if (offset < 0) {
            return -EINVAL;
        }
        long done = 0;
        while (done < size) {
            long n = C.pread(f.fd, buf.slice(done), size - done, offset + done);
            if (n < 0) {
                int errno = Native.errno();
                if (done > 0) {
                    break;
                }
                log.warn("op=read image={} offset={} size={} errno={}", f.name, offset, size, errno);
                return -errno;
            }
            if (n == 0) {
                break;
            }
            done += n;
        }
        return (int) done;
    }

    /**
     * Reads. A large read hands libfuse the backing descriptor and offset instead of data (struct
     * fuse_bufvec with FUSE_BUF_IS_FD): with splice_write, libfuse splices the pages from the
     * backing file to /dev/fuse, with no copy through user space. A small read is one pread into
     * a buffer libfuse writes out: splicing costs three system calls (splice, vmsplice, splice),
     * more than copying {@value #SPLICE_MIN} bytes or less. libfuse frees the bufvec and buffer.
     */
    @Override
    public int read_buf(String path, Pointer bufp, long size, long offset, FuseFileInfo fi) {
        OpenFile f = JournalFiles.owns(fi.fh.get()) ? null : open.get(fi.fh.get());
        if (f == null && !JournalFiles.owns(fi.fh.get())) {
            return -EBADF;
        }
        if (offset < 0) {
            return -EINVAL;
        }
        Pointer vec = C.malloc(BUFVEC_SIZE);
        if (vec == null) {
            return -ENOMEM;
        }
        vec.putLong(0, 1);      // count
        vec.putLong(8, 0);      // idx
        vec.putLong(16, 0);     // off
        vec.putInt(48, -1);     // buf[0].fd
        vec.putLong(56, 0);     // buf[0].pos
        if (size > SPLICE_MIN && f != null) { // an image: journal devices are not files to splice from
            vec.putLong(24, size);   // buf[0].size
            vec.putInt(32, FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY); // buf[0].flags
            vec.putAddress(40, 0);   // buf[0].mem
            vec.putInt(48, f.fd);
            vec.putLong(56, offset);
            bufp.putPointer(0, vec);
            return 0;
        }
        Pointer mem = C.malloc(Math.max(size, 1));
        if (mem == null) {
            C.free(vec);
            return -ENOMEM;
        }
        int n = read(path, mem, size, offset, fi);
        if (n < 0) {
            C.free(mem);
            C.free(vec);
            return n;
        }
        vec.putLong(24, n);
        vec.putInt(32, 0);
        vec.putAddress(40, mem.address());
        bufp.putPointer(0, vec);
        return 0;
    }

    /**
     * One pwrite (repeated while the backing file accepts part of it). An image a VM's reclaimer
     * watches has the write counted by its WriteTracker first (the reclaimer's fence).
     */
    @Override
    public int write(String path, Pointer buf, long size, long offset, FuseFileInfo fi) {
        if (JournalFiles.owns(fi.fh.get())) {
            return call("write", path, () -> journals.write(fi.fh.get(), buf, size, offset));
        }
        OpenFile f = open.get(fi.fh.get());
        if (f == null) {
            return -EBADF;
        }
        if (offset < 0 || offset > Long.MAX_VALUE - size) {
            return -EFBIG;
        }
        WriteTracker t = trackers.get(f.name);
        if (t == null) {
            return pwrite(f, buf, size, offset);
        }
        try {
            t.beginWrite(offset, size);
            return pwrite(f, buf, size, offset);
        } catch (IOException e) {
            log.error("op=write image={} offset={} size={} errno=EIO the reclaimer could not record that the write "
                    + "lands on ranges waiting to be punched: {}", f.name, offset, size, e.getMessage());
            return -EIO;
        } finally {
            t.endWrite();
        }
    }

    private int pwrite(OpenFile f, Pointer buf, long size, long offset) {
        long done = 0;
        while (done < size) {
            long n = C.pwrite(f.fd, buf.slice(done), size - done, offset + done);
            if (n <= 0) {
                int errno = n < 0 ? Native.errno() : EIO;
                if (done > 0) {
                    break; // a short write: the writer sees how much landed, then the error on its retry
                }
                if (errno == ENOSPC) {
                    log.warn("op=write image={} offset={} size={} errno=ENOSPC backing store is full", f.name, offset, size);
                } else {
                    log.warn("op=write image={} offset={} size={} errno={}", f.name, offset, size, errno);
                }
                return -errno;
            }
            done += n;
        }
        return (int) done;
    }

    /** close(dup(fd)): reports what a close of the backing file would (as passthrough_hp does). */
    @Override
    public int flush(String path, FuseFileInfo fi) {
        return call("flush", path, () -> {
            if (JournalFiles.owns(fi.fh.get())) {
                return 0; // close(2) is not a barrier; fsync is
            }
            OpenFile f = file(fi);
            int dup = C.dup(f.fd);
            if (dup < 0 || C.close(dup) != 0) {
                throw FsException.fromErrno(Native.errno(), "flush", f.name);
            }
            return 0;
        });
    }

    /** fsync or fdatasync of the backing descriptor: the guest's flush reaches the backing disk. */
    @Override
    public int fsync(String path, int isdatasync, FuseFileInfo fi) {
        return call("fsync", path, () -> {
            if (JournalFiles.owns(fi.fh.get())) {
                journals.fsync(fi.fh.get());
                return 0;
            }
            OpenFile f = file(fi);
            int rc = isdatasync != 0 ? C.fdatasync(f.fd) : C.fsync(f.fd);
            if (rc != 0) {
                throw FsException.fromErrno(Native.errno(), isdatasync != 0 ? "fdatasync" : "fsync", f.name);
            }
            return 0;
        });
    }

    /**
     * fsync of a directory. images/: of STORE/images, so creates, renames and unlinks of images
     * survive a host crash (unanswered, the kernel would take fsync of a directory as done and
     * never ask again). journals/: a device's create, rename and delete are committed before they
     * return, so there is nothing left to sync.
     */
    @Override
    public int fsyncdir(String path, FuseFileInfo fi) {
        return call("fsyncdir", path, () -> {
            if (Node.Kind.values()[(int) fi.fh.get()] == Node.Kind.IMAGES_DIR) {
                store.syncDir();
            }
            return 0;
        });
    }

    /**
     * libfuse 2's fsyncdir is {@code int (*)(const char *, int datasync, struct fuse_file_info *)};
     * jnr-fuse 0.5.8 binds it without the int, so the callback took datasync (0 or 1) for the
     * fuse_file_info pointer and answered without calling fsyncdir at all. This binding, put in
     * its slot of struct fuse_operations (the 29th callback) by run(), has the real signature.
     */
    public interface FsyncdirCallback {
        @Delegate
        int fsyncdir(String path, int datasync, Pointer fi);
    }

    private static final int FSYNCDIR_SLOT = 28;
    /** Held for the mount's life: the native closure must not be collected while libfuse may call it. */
    private final FsyncdirCallback fsyncdirCallback = (path, datasync, fi) -> fsyncdir(path, FuseFileInfo.of(fi));

    /** Closes the backing descriptor; an unlinked image's space returns when its last one closes. */
    @Override
    public int release(String path, FuseFileInfo fi) {
        return call("release", path, () -> {
            if (JournalFiles.owns(fi.fh.get())) {
                journals.release(fi.fh.get());
                return 0;
            }
            OpenFile f = open.remove(fi.fh.get());
            if (f == null) {
                throw new FsException(EBADF, "no open file for fh " + fi.fh.get());
            }
            if (C.close(f.fd) != 0) {
                throw FsException.fromErrno(Native.errno(), "close", f.name);
            }
            if (f.unlinked) {
                log.debug("closed unlinked image={}", f.name);
            }
            return 0;
        });
    }

    /** truncate by path: shrinking releases the blocks past the new end. */
    @Override
    public int truncate(String path, long size) {
        return call("truncate", path, () -> {
            if (size < 0) {
                throw new FsException(EINVAL, "negative size " + size);
            }
            Node n = fileNode(path);
            if (n.kind() == Node.Kind.JOURNAL) {
                journals.truncate(n.name(), size);
                return 0;
            }
            String name = n.name();
            int fd = store.openImage(name, O_WRONLY);
            try {
                puncher.truncate(fd, name, size);
            } finally {
                C.close(fd);
            }
            return 0;
        });
    }

    @Override
    public int ftruncate(String path, long size, FuseFileInfo fi) {
        return call("ftruncate", path, () -> {
            if (size < 0) {
                throw new FsException(EINVAL, "negative size " + size);
            }
            if (JournalFiles.owns(fi.fh.get())) {
                journals.ftruncate(fi.fh.get(), size);
                return 0;
            }
            OpenFile f = file(fi);
            puncher.truncate(f.fd, f.name, size);
            return 0;
        });
    }

    /**
     * fallocate, intercepted: PUNCH_HOLE and ZERO_RANGE release the backing blocks at once
     * (a guest's discard arrives here through QEMU's discard=unmap); allocation passes through.
     * Modes that move data (COLLAPSE_RANGE, INSERT_RANGE) are refused.
     */
    @Override
    public int fallocate(String path, int mode, long offset, long length, FuseFileInfo fi) {
        return call("fallocate", path, () -> {
            if (offset < 0 || length <= 0) {
                throw new FsException(EINVAL, "bad range offset=" + offset + " length=" + length);
            }
            if (offset > Long.MAX_VALUE - length) {
                throw new FsException(EFBIG, "range past 2^63: offset=" + offset + " length=" + length);
            }
            if (JournalFiles.owns(fi.fh.get())) {
                journals.fallocate(fi.fh.get(), mode, offset, length);
                return 0;
            }
            OpenFile f = file(fi);
            switch (mode) {
                case MODE_PUNCH -> puncher.punch(f.fd, f.name, offset, length);
                case MODE_ZERO -> puncher.zeroRange(f.fd, f.name, offset, length, false);
                case MODE_ZERO_KEEP -> puncher.zeroRange(f.fd, f.name, offset, length, true);
                case MODE_ALLOCATE, MODE_KEEP_SIZE -> {
                    if (C.fallocate(f.fd, mode, offset, length) != 0) {
                        throw FsException.fromErrno(Native.errno(), "fallocate", f.name);
                    }
                }
                default -> throw new FsException(EOPNOTSUPP, "fallocate mode 0x" + Integer.toHexString(mode)
                        + " is not supported");
            }
            return 0;
        });
    }

    /** Removes the backing file at once; its blocks are free as soon as nobody holds it open. */
    @Override
    public int unlink(String path) {
        return call("unlink", path, () -> {
            Node n = fileNode(path);
            if (n.kind() == Node.Kind.JOURNAL) {
                journals.unlink(n.name());
                return 0;
            }
            String name = n.name();
            if (name.startsWith(Node.HIDDEN_PREFIX) && !store.exists(name)) {
                return 0; // a hide a refused rename undid: nothing is left under the hidden name
            }
            removeImage(name);
            return 0;
        });
    }

    /** Removes an image's backing file and records the release. Open files of it stay usable. */
    private void removeImage(String name) throws FsException {
        BackingStore.Usage usage = store.usage(name);
        store.unlink(name);
        int holders = 0;
        for (OpenFile f : open.values()) {
            if (name.equals(f.name) && !f.unlinked) {
                f.unlinked = true;
                holders++;
            }
        }
        ledger.record(name, 0, usage == null ? 0 : usage.size(), usage == null ? 0 : usage.allocated(),
                ReleaseLedger.Reason.UNLINK);
        ledger.forget(name);
        if (holders > 0) {
            log.info("unlink image={} still open by {} handle(s); its space returns when they close", name, holders);
        }
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
            if (to.name() != null && to.name().startsWith(Node.HIDDEN_PREFIX) && from.kind() == to.kind()) {
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
        if (from.kind() == Node.Kind.JOURNAL) {
            journals.hide(from.name(), hidden.name());
        } else {
            if (vmImage.test(from.name())) {
                throw new FsException(EBUSY, "image " + from.name() + " is a running VM's image for the reclaimer: "
                        + "it is neither unlinked nor replaced (vmfuse vm remove it first)");
            }
            renameImage(from.name(), hidden.name());
            log.info("hide image={} as={}: unlinked or replaced while open; its space returns after the last close",
                    from.name(), hidden.name());
        }
        LAST_HIDE.set(new Hide(from.kind(), from.name(), hidden.name(), callerPid()));
    }

    /** Undoes a hide whose rename was refused: the image or device is back under its name, as it was. */
    private void unhide(Hide h) {
        try {
            if (h.kind() == Node.Kind.JOURNAL) {
                journals.rename(h.hiddenAs(), h.name());
            } else {
                renameImage(h.hiddenAs(), h.name());
            }
            log.info("rename onto {} refused: it is back from {}", h.name(), h.hiddenAs());
        } catch (FsException | RuntimeException e) {
            log.error("rename onto {} refused, and it cannot be brought back from {}: {}", h.name(), h.hiddenAs(),
                    e.toString());
        }
    }

    /** rename(2) within images/ or within journals/, every check made before anything moves. */
    private void move(Node from, Node to, String oldpath, String newpath) throws FsException {
        if (from.kind() == Node.Kind.JOURNAL && to.kind() == Node.Kind.JOURNAL) {
            journals.rename(from.name(), to.name());
            return;
        }
        if (from.kind() != Node.Kind.IMAGE || to.kind() != Node.Kind.IMAGE) {
            throw new FsException(from.kind() == to.kind() ? EPERM : EXDEV,
                    "rename only within images/ or within journals/: " + oldpath + " -> " + newpath);
        }
        if (vmImage.test(from.name()) || vmImage.test(to.name())) {
            throw new FsException(EBUSY, "image " + (vmImage.test(from.name()) ? from.name() : to.name())
                    + " is a VM's image for the reclaimer (vmfuse vm remove it first)");
        }
        List<OpenFile> replaced = open.values().stream().filter(f -> to.name().equals(f.name) && !f.unlinked).toList();
        renameImage(from.name(), to.name());
        replaced.forEach(f -> f.unlinked = true); // replaced by the rename
        log.info("rename image={} to={}", from.name(), to.name());
    }

    /** Renames an image in the store, and its release counts and open files with it. */
    private void renameImage(String from, String to) throws FsException {
        store.rename(from, to);
        ledger.renamed(from, to);
        for (OpenFile f : open.values()) {
            if (from.equals(f.name) && !f.unlinked) {
                f.name = to;
            }
        }
    }

    /** chmod of an image, or of images/ (who may create images there). */
    @Override
    public int chmod(String path, long mode) {
        return call("chmod", path, () -> {
            if (node(path).kind() == Node.Kind.IMAGES_DIR) {
                store.chmodDir((int) mode);
            } else {
                store.chmod(imageName(path), (int) mode);
            }
            return 0;
        });
    }

    @Override
    public int chown(String path, long uid, long gid) {
        return call("chown", path, () -> {
            if (node(path).kind() == Node.Kind.IMAGES_DIR) {
                store.chownDir((int) uid, (int) gid);
            } else {
                store.chown(imageName(path), (int) uid, (int) gid);
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
            store.utimens(n.name(), Struct.getMemory(timespec[0]));
            return 0;
        });
    }

    /** The backing filesystem's figures: df on the mount shows the store's disk. */
    @Override
    public int statfs(String path, Statvfs stbuf) {
        return call("statfs", path, () -> {
            store.statfs(Struct.getMemory(stbuf));
            return 0;
        });
    }

    @Override
    public int mkdir(String path, long mode) {
        return call("mkdir", path, () -> {
            throw new FsException(EPERM, "the namespace is flat: no directories may be made: " + path);
        });
    }

    @Override
    public int rmdir(String path) {
        return call("rmdir", path, () -> {
            throw new FsException(EPERM, "images/ and journals/ cannot be removed: " + path);
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
        for (OpenFile f : open.values()) {
            C.close(f.fd);
        }
        open.clear();
    }
}
