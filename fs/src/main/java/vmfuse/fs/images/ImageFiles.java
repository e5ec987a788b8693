package vmfuse.fs.images;

import static vmfuse.fs.nativeio.Native.*;

import java.io.IOException;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Function;
import java.util.function.Predicate;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import vmfuse.durable.Parking;
import vmfuse.fs.FsException;
import vmfuse.fs.Node;
import vmfuse.fs.nativeio.LibC;
import vmfuse.fs.nativeio.StructStat;
import vmfuse.fs.space.HolePuncher;
import vmfuse.fs.space.ReleaseLedger;
import vmfuse.fs.volume.Door;
import vmfuse.fs.volume.ImageVolume;
import vmfuse.reclaimer.ImageHold;
import vmfuse.reclaimer.WriteTracker;

/**
 * The images of the store as a door opens them: every open {@link ImageVolume}, so that an
 * unlink or a rename of an image reaches its open volumes (their names in counts and logs, and
 * whether they still have one), the reclaimer can hold an image closed ({@link #whileClosed}),
 * and status can say which images are open; the folders of images/. Paths are checked by
 * {@link Node} first.
 */
public final class ImageFiles {
    private static final Logger log = LoggerFactory.getLogger(ImageFiles.class);
    /** How long an open of an image the reclaimer holds closed waits before it fails (EBUSY). */
    private static final long HOLD_WAIT_MS = 120_000;

    private final ImagesDir dir;
    private final HolePuncher puncher;
    private final ReleaseLedger ledger;
    private final Set<ImageVolume> open = ConcurrentHashMap.newKeySet();
    /** The write trackers of images VMs' reclaimers watch, by image name (set by the daemon). */
    private volatile Map<String, WriteTracker> trackers = Map.of();
    /** Whether a VM's image is at a path, or inside the folder at that path (set by the daemon). */
    private volatile Predicate<String> vmImage = path -> false;
    private final Function<String, WriteTracker> trackerOf = name -> trackers.get(name);
    /**
     * Images the reclaimer holds closed; guarded by itself, and so are the opens of images, so
     * that no open slips between the check and the hold.
     */
    private final Set<String> held = new HashSet<>();

    public ImageFiles(ImagesDir dir, HolePuncher puncher, ReleaseLedger ledger) {
        this.dir = dir;
        this.puncher = puncher;
        this.ledger = ledger;
    }

    /**
     * The reclaimer's write trackers, by image name (writes to those images go through them), and
     * where VMs' images are ({@code vmImage}: true for a VM's image, and for a folder that holds
     * one): those are neither renamed nor replaced nor hidden.
     */
    public void watch(Map<String, WriteTracker> byImage, Predicate<String> vmImage) {
        this.trackers = byImage;
        this.vmImage = vmImage;
    }

    /** EBUSY if {@code path} is a registered VM's image or a folder holding one: a VM's disk keeps its name. */
    public void checkNotVm(String path, String what) throws FsException {
        if (vmImage.test(path)) {
            throw new FsException(EBUSY, path + (dir.exists(path) ? " is" : " holds")
                    + " a running VM's image for the reclaimer: it is not " + what + " (vmfuse vm remove the VM first)");
        }
    }

    /** Makes a folder of images, owned by {@code uid}:{@code gid}. */
    public void mkdir(String path, int mode, int uid, int gid) throws FsException {
        if (path.split("/").length >= Node.MAX_DEPTH) {
            throw new FsException(ENAMETOOLONG, "a folder at level " + Node.MAX_DEPTH + " could hold no image (at most "
                    + (Node.MAX_DEPTH - 1) + " levels of folders): " + path);
        }
        dir.mkdir(path, mode, uid, gid);
        log.info("mkdir folder={} mode={}", path, Integer.toOctalString(mode & 07777));
    }

    /**
     * Removes an empty folder. One that holds only images unlinked while still open (libfuse's
     * hidden names) is EBUSY, with the reason, where a plain directory would say ENOTEMPTY.
     */
    public void rmdir(String path) throws FsException {
        try {
            dir.rmdir(path);
        } catch (FsException e) {
            if (e.errno() == ENOTEMPTY && dir.holdsOnlyHidden(path)) {
                throw new FsException(EBUSY, "folder " + path + " holds images unlinked while still open: it can be "
                        + "removed once they are closed");
            }
            throw e;
        }
        log.info("rmdir folder={}", path);
    }

    /**
     * Opens an existing image, once the reclaimer does not hold it. Through the mount, an open for
     * writing writes the image from here on ({@link #claimWriter}); through the NBD socket, an
     * open writes from its first write, so clients that only read never hold off the mount's.
     */
    public ImageVolume open(String name, int flags, Door door) throws FsException {
        synchronized (held) {
            awaitRelease(name);
            ImageVolume v = volume(dir.openImage(name, flags & ~O_TRUNC), name);
            if (door == Door.MOUNT && (flags & O_ACCMODE) != O_RDONLY) {
                claimOrClose(v, door);
            }
            return truncatedAtOpen(v, name, flags);
        }
    }

    /**
     * open(2)'s O_TRUNC (libfuse passes it with atomic_o_trunc, and with a create that finds the
     * file) is a truncate to 0 through the mount: never the backing open's own, which would cut
     * a running VM's image before its writer is asked, and count nothing. An open for reading
     * cuts by name, as truncate(2) does, and writes no more.
     */
    private ImageVolume truncatedAtOpen(ImageVolume v, String name, int flags) throws FsException {
        if ((flags & O_TRUNC) == 0) {
            return v;
        }
        try {
            if ((flags & O_ACCMODE) == O_RDONLY) {
                truncate(name, 0);
            } else {
                v.truncate(0);
            }
            return v;
        } catch (FsException | RuntimeException e) {
            v.close();
            throw e;
        }
    }

    private void claimOrClose(ImageVolume v, Door door) throws FsException {
        try {
            claimWriter(v, door);
        } catch (FsException e) {
            v.close();
            throw e;
        }
    }

    /**
     * One door writes an image at a time, as QEMU's image locking promises on a file: {@code v}
     * may write through {@code door} unless an open of the other door writes the same image now
     * (EBUSY, naming it). Opens of one door share it: the kernel's locks order the mount's
     * writers, and one NBD client's connections are one writer.
     */
    public void claimWriter(ImageVolume v, Door door) throws FsException {
        if (v.writer() == door) {
            return;
        }
        synchronized (held) {
            // by the file, not its name: a rename or an unlink between two opens changes no writer
            StructStat.FileId mine = v.fileId();
            for (ImageVolume o : open) {
                Door w = o.writer();
                if (o != v && w != null && w != door && mine.equals(o.fileId())) {
                    throw new FsException(EBUSY, "image " + v.name() + " is being written through the " + w.label()
                            + "; one door writes an image at a time (it can be read through both)");
                }
            }
            v.writer(door);
        }
    }

    /** Creates an image (or opens it, as open(2) with O_CREAT does), owned by {@code uid}:{@code gid}. */
    public ImageVolume create(String name, int flags, int mode, int uid, int gid) throws FsException {
        synchronized (held) {
            awaitRelease(name);
            int fd = dir.createImage(name, flags & ~O_TRUNC, mode);
            if (uid != 0 || gid != 0) {
                try {
                    dir.chown(name, uid, gid);
                } catch (FsException e) {
                    LibC.INSTANCE.close(fd);
                    throw e;
                }
            }
            log.info("create image={} mode={}", name, Integer.toOctalString(mode & 07777));
            ImageVolume v = volume(fd, name);
            if ((flags & O_ACCMODE) != O_RDONLY) {
                claimOrClose(v, Door.MOUNT);
            }
            return truncatedAtOpen(v, name, flags);
        }
    }

    private ImageVolume volume(int fd, String name) {
        ImageVolume v = new ImageVolume(fd, name, puncher, trackerOf, open::remove);
        open.add(v);
        return v;
    }

    /**
     * Sets an image's size by name (truncate(2) without an open); a shrink is counted. It writes
     * the image through the mount: EBUSY while the NBD socket writes it.
     */
    public void truncate(String name, long size) throws FsException {
        ImageVolume v = open(name, O_WRONLY, Door.MOUNT);
        try {
            v.truncate(size);
        } finally {
            v.close();
        }
    }

    /** Waits, parked (see {@link Parking}), up to HOLD_WAIT_MS until the reclaimer releases {@code name}. */
    private void awaitRelease(String name) throws FsException {
        assert Thread.holdsLock(held);
        if (!held.contains(name)) {
            return;
        }
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
            if (isOpen(name)) {
                return false;
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

    /** Removes an image's backing file and counts the release. Its open volumes stay usable, without a name. */
    public void remove(String name) throws FsException {
        if (isOpen(name)) {
            // libfuse hides (renames, checked there) only what it counts open: an image only the
            // NBD door has open, or a name the kernel looked up anew (as after a refused rename),
            // comes here as a plain unlink, and a running VM's disk went from the store (found by
            // a review)
            checkNotVm(name, "unlinked");
        }
        StructStat.Usage usage = dir.usage(name);
        dir.unlink(name);
        int holders = 0;
        for (ImageVolume v : open) {
            if (name.equals(v.name()) && !v.unlinked()) {
                v.markUnlinked();
                holders++;
            }
        }
        ledger.record(ReleaseLedger.image(name), 0, usage == null ? 0 : usage.size(), usage == null ? 0 : usage.allocated(),
                ReleaseLedger.Reason.UNLINK);
        ledger.forget(ReleaseLedger.image(name));
        if (holders > 0) {
            log.info("unlink image={} still open by {} handle(s); its space returns when they close", name, holders);
        }
    }

    /**
     * Renames an image or a folder in the store, and the release counts and open volumes of what
     * moved with it; open volumes of an image {@code to} replaces lose their name.
     */
    public void rename(String from, String to) throws FsException {
        rename(from, to, true);
    }

    /** As {@link #rename(String, String)}; unless {@code replace}, EEXIST if {@code to} exists. */
    public void rename(String from, String to, boolean replace) throws FsException {
        if (Node.within(to, from) && !to.equals(from)) {
            throw new FsException(EINVAL, "a folder cannot be moved into itself: " + from + " -> " + to);
        }
        if (!from.equals(to) && dir.isFolder(from)) {
            checkLimits(from, to);
        }
        if (replace) {
            dir.rename(from, to);
        } else {
            dir.renameNoReplace(from, to);
        }
        if (from.equals(to)) {
            return;
        }
        ledger.renamed(ReleaseLedger.image(from), ReleaseLedger.image(to));
        for (ImageVolume v : open) {
            if (v.unlinked()) {
                continue;
            }
            if (to.equals(v.name())) {
                v.markUnlinked();
            } else if (Node.within(v.name(), from)) {
                v.renamed(to + v.name().substring(from.length()));
            }
        }
    }

    /** ENAMETOOLONG if folder {@code from} moved to {@code to} would put anything past Node's depth or length limits. */
    private void checkLimits(String from, String to) throws FsException {
        if (to.split("/").length >= Node.MAX_DEPTH) {
            throw new FsException(ENAMETOOLONG, "a folder at level " + Node.MAX_DEPTH + " could hold no image: " + to);
        }
        for (String inside : dir.tree(from)) {
            try {
                Node.checkImagePath(to + "/" + inside);
            } catch (FsException e) {
                throw new FsException(e.errno(), "moving " + from + " to " + to + " would put " + from + "/" + inside
                        + " past the limits: " + e.getMessage());
            }
        }
    }

    /** Whether image {@code name} is open (not unlinked) through a door. */
    public boolean isOpen(String name) {
        for (ImageVolume v : open) {
            if (!v.unlinked() && name.equals(v.name())) {
                return true;
            }
        }
        return false;
    }

    /** How many opens each image has, for status. */
    public Map<String, Integer> openCounts() {
        Map<String, Integer> counts = new TreeMap<>();
        for (ImageVolume v : open) {
            if (!v.unlinked()) {
                counts.merge(v.name(), 1, Integer::sum);
            }
        }
        return counts;
    }

    /** Closes every open volume (the kernel releases everything before an unmount completes). */
    public void closeAll() {
        for (ImageVolume v : Set.copyOf(open)) {
            try {
                v.close();
            } catch (FsException e) {
                log.warn("closing image={} at unmount: {}", v.name(), e.getMessage());
            }
        }
    }
}
