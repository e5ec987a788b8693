package vmfuse.reclaimer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.function.LongSupplier;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import vmfuse.nbd.NbdClient;

/*
 * The fence of a qcow2 image, kept by QEMU: a dirty bitmap per token, in guest offsets. While a
 * QEMU runs the image its metadata is never parsed (its L2 cache may be newer than the file):
 * discards go through QEMU. While none does, the image is held closed and Qcow2Map punches.
 *
 *   token()     adds a persistent dirty bitmap "vmfuse-fence-N" on the drive over QMP: from now on
 *               QEMU marks every guest write, and when it closes the image it stores the bitmap
 *               in it; any QEMU tool that opens the image later (QEMU, qemu-img, qemu-io) loads
 *               it and goes on marking
 *   admit()     a notice's token must name a bitmap this daemon made and still has
 *   carryOut()  with a QEMU on the QMP socket that has the image open: stops the VM (QEMU drains
 *               what is in flight), freezes the bitmap, exports the drive read-only over NBD and
 *               asks which of the notice's ranges the bitmap marks written (NBD block status,
 *               context qemu:dirty-bitmap:NAME); discards the rest through QEMU (HMP qemu-io
 *               "discard": the qcow2 driver frees the clusters and, with the drive's
 *               discard=unmap, punches the file); lets the VM run again if it was running.
 *               With none: the filesystem holds the image closed (ImageHold: no process has it
 *               open, an open waits); `qemu-img info` must show the bitmap stored, recording and
 *               not in use (a QEMU that died with it loaded leaves it "in-use": inconsistent);
 *               qemu-nbd exports the image file read-only with the bitmap and block status gives
 *               what was written since the token; Qcow2Map maps the rest to data clusters this
 *               image alone owns and the puncher punches them; `qemu-img bitmap --remove`.
 *
 * A notice whose bitmap is gone, inconsistent or no longer recording is dropped, never punched:
 * nothing could tell what the guest wrote since its token. A token's bitmap is removed when no
 * waiting notice needs it, or after 300 s if no notice came; bitmaps of this prefix nothing
 * waits on (left by an earlier daemon) are removed when a token is made.
 */
public final class QemuFence implements Fence {
    private static final Logger log = LoggerFactory.getLogger(QemuFence.class);
    private static final String PREFIX = "vmfuse-fence-";
    /** A carry-out's frozen copy of a token's bitmap (not persistent: gone if QEMU quits). */
    private static final String FROZEN = "vmfuse-frozen-";
    private static final String EXPORT = "vmfuse-reclaim";
    private static final long TTL_NANOS = TimeUnit.SECONDS.toNanos(300);
    private static final long TOOL_SECONDS = 120;

    private final Path qmpSocket;
    private final Path imageFile;
    private final Path backingFile;
    private final Path nbdSocket;
    private final LongSupplier allocated;
    private final ImageHold hold;
    private final Puncher puncher;
    /**
     * Held by whatever talks to QEMU (a token's bitmap, a carry-out, a resume): one at a time. This
     * object's monitor guards only the two maps below, for moments, and is never held while
     * calling out: a carry-out's Done (which takes the VmReclaimer's monitor) runs under qmp alone,
     * while a notice holds the VmReclaimer's monitor and then takes this one to admit. Order: qmp,
     * then this; the VmReclaimer's monitor, then this.
     */
    private final Object qmp = new Object();
    private long next = WriteTracker.newEpoch(); // guarded by qmp
    // guarded by this
    private final Map<Long, Long> live = new TreeMap<>(); // token -> issued (nanoTime)
    /**
     * token -> the ranges its notices wait on, merged: a range two notices hold is one, so a token
     * is done when what its notices held was carried out (a count of bytes per notice drifted
     * where notices overlapped, and a token never ended while the daemon ran).
     */
    private final Map<Long, ByteRanges> pendingByToken = new TreeMap<>();

    /**
     * The fence of the image QEMU opens as {@code imageFile}, over the QMP socket {@code qmpSocket};
     * {@code backingFile} is the same image's file as the daemon reaches it with no QEMU running,
     * {@code hold} keeps processes off it then, and {@code puncher} punches it. {@code nbdSocket}
     * is where a carry-out with no QEMU exports the image (and where one with QEMU does, if the
     * place beside the QMP socket is too long a path); {@code allocated} gives the image file's allocated
     * bytes (to count what a discard through QEMU freed).
     */
    public QemuFence(Path qmpSocket, Path imageFile, Path backingFile, Path nbdSocket, LongSupplier allocated,
            ImageHold hold, Puncher puncher) {
        this.qmpSocket = qmpSocket;
        this.imageFile = imageFile;
        this.backingFile = backingFile;
        this.nbdSocket = nbdSocket;
        this.allocated = allocated;
        this.hold = hold;
        this.puncher = puncher;
    }

    /**
     * Where QEMU's own NBD server exports the image to a carry-out while it runs: beside its QMP
     * socket, in a directory QEMU can write (it made that socket there), since QEMU binds it as the
     * user it runs as (libvirt's libvirt-qemu), who may not write in the store. {@code nbdSocket}
     * if that path would be too long for a unix socket.
     */
    private Path onlineNbdSocket() {
        Path p = qmpSocket.resolveSibling(qmpSocket.getFileName() + ".nbd");
        return p.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8).length < 108 ? p : nbdSocket;
    }

    /** Exists while a carry-out has the VM stopped. */
    private Path pausedMarker() {
        return nbdSocket.resolveSibling(nbdSocket.getFileName() + ".paused");
    }

    /**
     * At start: if a daemon died while its carry-out had the VM stopped, lets the VM run again
     * (if its QEMU is still there and still paused), and says so in the log.
     */
    public void resumeIfLeftPaused() {
        synchronized (qmp) {
            resumeIfLeftPausedLocked();
        }
    }

    private void resumeIfLeftPausedLocked() {
        Path marker = pausedMarker();
        if (!Files.exists(marker)) {
            return;
        }
        try (Qmp q = Qmp.connect(qmpSocket)) {
            JsonNode status = q.execute("query-status", null);
            if (Qmp.text(status, "status", "QMP query-status").equals("paused")) {
                q.execute("cont", null);
                log.warn("reclaim image={}: the VM was left paused by a reclaim the last daemon did not finish; "
                        + "resumed it ({})", imageFile, status);
            }
        } catch (IOException e) {
            log.info("reclaim image={}: a reclaim the last daemon did not finish had paused the VM; its QEMU is "
                    + "gone ({})", imageFile, e.getMessage());
        }
        try {
            Files.deleteIfExists(marker);
        } catch (IOException e) {
            log.warn("reclaim image={}: cannot remove {}: {}", imageFile, marker, e.getMessage());
        }
    }

    /**
     * The QEMU drive that has {@code imageFile} open: its device (the drive's BlockBackend name,
     * empty where the disk was set up with -blockdev, as libvirt does), its top node, the guest
     * device's qdev id or QOM path, and its dirty bitmaps (query-block's BlockDirtyInfo objects).
     */
    private record Drive(String device, String node, String qdev, List<JsonNode> bitmaps) {
        /** What block-dirty-bitmap-* name it by: the drive, or (-blockdev) its top node, which holds the bitmaps. */
        String bitmapNode() {
            return device.isEmpty() ? node : device;
        }

        /**
         * What HMP qemu-io names it by: the drive, or (-blockdev) the guest device's own block
         * backend, -d QDEV. (qemu-io on the node itself would open a second backend, which the
         * guest's device does not share writes with: refused.)
         */
        String qemuIoTarget() throws IOException {
            if (!device.isEmpty()) {
                return device;
            }
            if (qdev == null || qdev.isEmpty()) {
                throw new IOException("QMP query-block: the drive of node " + node + " has neither a name nor a device");
            }
            return "-d " + qdev;
        }
    }

    /** The drive of the QEMU on {@code q} that has the image open, or null if none has. */
    private Drive drive(Qmp q) throws IOException {
        JsonNode blocks = q.execute("query-block", null);
        if (!blocks.isArray()) {
            throw new IOException("QMP query-block: the return is " + blocks.getNodeType() + ", not an array");
        }
        for (JsonNode b : blocks) {
            JsonNode inserted = b.get("inserted");
            if (inserted == null) {
                continue; // a drive with no medium
            }
            String file = Qmp.text(inserted, "file", "QMP query-block");
            if (!Path.of(file).normalize().equals(imageFile.normalize())) {
                continue;
            }
            List<JsonNode> bitmaps = new ArrayList<>();
            for (JsonNode holder : new JsonNode[] {inserted, b}) { // BlockDeviceInfo's, or BlockInfo's (QEMU < 7)
                JsonNode list = holder.get("dirty-bitmaps");
                if (list != null) {
                    if (!list.isArray()) {
                        throw new IOException("QMP query-block: field 'dirty-bitmaps' is not an array");
                    }
                    list.forEach(bitmaps::add);
                }
            }
            JsonNode qdev = b.get("qdev");
            return new Drive(Qmp.text(b, "device", "QMP query-block"), Qmp.text(inserted, "node-name",
                    "QMP query-block"), qdev == null || !qdev.isTextual() ? null : qdev.asText(), bitmaps);
        }
        return null;
    }

    private Drive requireDrive(Qmp q) throws IOException {
        Drive d = drive(q);
        if (d == null) {
            throw new IOException("no drive of the QEMU at " + qmpSocket + " has " + imageFile + " open");
        }
        return d;
    }

    @Override
    public long token() throws IOException {
        synchronized (qmp) {
            return tokenLocked();
        }
    }

    private long tokenLocked() throws IOException {
        sweep();
        long t = ++next;
        try (Qmp q = Qmp.connect(qmpSocket)) {
            Drive d = requireDrive(q);
            removeForgotten(q, d);
            makeRoomForAToken(q, d);
            try {
                q.execute("block-dirty-bitmap-add", Qmp.args("node", d.bitmapNode(), "name", PREFIX + t,
                        "persistent", true));
            } catch (IOException e) { // a qcow2 v2 image cannot store bitmaps: the fence lasts as long as this QEMU
                log.warn("reclaim image={}: a persistent bitmap was refused ({}); the fence of token {} lives only "
                        + "while this QEMU runs", imageFile, e.getMessage(), t);
                q.execute("block-dirty-bitmap-add", Qmp.args("node", d.bitmapNode(), "name", PREFIX + t));
            }
        }
        synchronized (this) {
            live.put(t, System.nanoTime());
        }
        return t;
    }

    /**
     * Keeps the tokens live at once to {@link #MAX_TOKENS}, as a raw image's are: QEMU keeps a
     * bitmap per token, each written to on every guest write (a review measured a guest's FENCEs
     * taking QEMU from 44 MB to 690 MB). The oldest token nothing waits on goes; if every one has
     * notices waiting, the FENCE is refused until they are carried out.
     */
    private void makeRoomForAToken(Qmp q, Drive d) throws IOException {
        long oldest;
        synchronized (this) {
            if (live.size() < MAX_TOKENS) {
                return;
            }
            oldest = live.entrySet().stream().filter(e -> !pendingByToken.containsKey(e.getKey()))
                    .min(Map.Entry.comparingByValue()).map(Map.Entry::getKey).orElse(-1L);
            if (oldest < 0) {
                throw new IOException(MAX_TOKENS + " fence tokens have notices waiting: no new token until they are "
                        + "carried out");
            }
            live.remove(oldest);
        }
        removeBitmap(q, d.bitmapNode(), PREFIX + oldest);
        log.info("reclaim image={} removed the bitmap {}{}: the oldest of {} tokens, nothing waits on it", imageFile,
                PREFIX, oldest, MAX_TOKENS);
    }

    static final int MAX_TOKENS = 64;

    /** Removes the drive's fence bitmaps whose token this daemon neither issued nor has notices for. */
    private void removeForgotten(Qmp q, Drive d) throws IOException {
        for (JsonNode b : d.bitmaps()) {
            String name = Qmp.text(b, "name", "QMP query-block dirty-bitmaps");
            if (!name.startsWith(PREFIX) || !name.substring(PREFIX.length()).matches("\\d{1,18}")) {
                continue; // not a fence of ours
            }
            long t = Long.parseLong(name.substring(PREFIX.length()));
            boolean forgotten;
            synchronized (this) {
                forgotten = !live.containsKey(t) && !pendingByToken.containsKey(t);
            }
            if (forgotten) {
                try {
                    removeBitmap(q, d.bitmapNode(), PREFIX + t);
                    log.info("reclaim image={} removed the bitmap {}{} nothing waits on", imageFile, PREFIX, t);
                } catch (IOException e) {
                    log.debug("removing bitmap {}{}: {}", PREFIX, t, e.getMessage());
                }
            }
        }
    }

    private static void removeBitmap(Qmp q, String device, String bitmap) throws IOException {
        q.execute("block-dirty-bitmap-remove", Qmp.args("node", device, "name", bitmap));
    }

    /** Removes the bitmaps of tokens nothing waits on and no notice used within the TTL. */
    private void sweep() {
        long now = System.nanoTime();
        List<Long> old = new ArrayList<>();
        synchronized (this) {
            for (Map.Entry<Long, Long> e : live.entrySet()) {
                if (now - e.getValue() > TTL_NANOS && !pendingByToken.containsKey(e.getKey())) {
                    old.add(e.getKey());
                }
            }
            old.forEach(live::remove);
        }
        for (long t : old) {
            try (Qmp q = Qmp.connect(qmpSocket)) {
                removeBitmap(q, requireDrive(q).bitmapNode(), PREFIX + t);
            } catch (IOException e) { // QEMU gone: the next token() under a QEMU removes it
                log.debug("removing bitmap {}{}: {}", PREFIX, t, e.getMessage());
            }
        }
    }

    @Override
    public synchronized List<Range> admit(long token, List<Range> ranges) throws ProtocolException {
        if (!live.containsKey(token)) {
            throw new ProtocolException("stale-fence", "fence token " + token + " is not a live token of this daemon");
        }
        live.put(token, System.nanoTime());
        addWaiting(token, ranges);
        return ByteRanges.of(ranges).list();
    }

    private void addWaiting(long token, List<Range> ranges) {
        for (Range r : ranges) {
            if (r.length() > 0) {
                pendingByToken.computeIfAbsent(token, t -> new ByteRanges()).add(r.offset(), r.end());
            }
        }
    }

    @Override
    public synchronized void restore(long token, List<Range> ranges) {
        live.putIfAbsent(token, System.nanoTime()); // checked against the bitmaps at carry-out
        addWaiting(token, ranges);
    }

    @Override
    public synchronized long pendingBytes() {
        return pendingByToken.values().stream().mapToLong(ByteRanges::bytes).sum();
    }

    @Override
    public void carryOut(long token, List<Range> ranges, Done done) throws IOException {
        synchronized (qmp) {
            carryOutLocked(token, ranges, done);
        }
    }

    private void carryOutLocked(long token, List<Range> ranges, Done done) throws IOException {
        Qmp q;
        try {
            q = Qmp.connect(qmpSocket);
        } catch (IOException e) {
            carryOutOffline(token, ranges, done, "no QEMU answers on " + qmpSocket + ": " + e.getMessage());
            return;
        }
        try (q) {
            Drive d = drive(q);
            if (d == null) {
                q.close();
                carryOutOffline(token, ranges, done, "the QEMU at " + qmpSocket + " does not have the image open");
                return;
            }
            carryOutOnline(q, d, token, ranges, done);
        }
    }

    /**
     * Punches through the running QEMU, the VM stopped (by this daemon if it ran). The token's
     * bitmap goes on recording throughout: what is read is a frozen copy of it, made at once. A
     * review found the token's own bitmap disabled for the carry-out, so a VM that was paused by
     * someone else (or -S) and resumed meanwhile by another monitor wrote unrecorded, and a later
     * notice of that token punched those writes. A VM found running before the discards (resumed
     * by another monitor) is punched nothing now: the notice waits for the next try.
     */
    private void carryOutOnline(Qmp q, Drive dev, long token, List<Range> ranges, Done done) throws IOException {
        String bitmap = PREFIX + token;
        String why = untrusted(bitmap(dev.bitmaps(), bitmap, "QMP query-block dirty-bitmaps"), false);
        if (why != null) {
            drop(token, ranges, done, bitmap, why);
            return;
        }
        List<Range> clean;
        long before = allocated.getAsLong();
        boolean running = running(q);
        if (running) {
            Files.write(pausedMarker(), new byte[0]); // if this daemon dies before cont, the next one resumes the VM
            q.execute("stop", null);
        }
        String frozen = FROZEN + token;
        Path socket = onlineNbdSocket();
        try {
            removeIfThere(q, dev.bitmapNode(), frozen); // a daemon that died in a carry-out left it
            q.execute("transaction", Qmp.args("actions", Qmp.array(
                    Qmp.args("type", "block-dirty-bitmap-add", "data",
                            Qmp.args("node", dev.bitmapNode(), "name", frozen, "disabled", true)),
                    Qmp.args("type", "block-dirty-bitmap-merge", "data",
                            Qmp.args("node", dev.bitmapNode(), "target", frozen, "bitmaps", Qmp.array(bitmap))))));
            try {
                Files.deleteIfExists(socket);
                q.execute("nbd-server-start", Qmp.args("addr", Qmp.args("type", "unix", "data",
                        Qmp.args("path", socket.toString()))));
                try {
                    q.execute("block-export-add", Qmp.args("type", "nbd", "id", EXPORT, "node-name", dev.node(),
                            "name", EXPORT, "writable", false, "bitmaps", Qmp.array(frozen)));
                    try (NbdClient c = NbdClient.connect(socket, EXPORT, DIRTY_BITMAP + frozen)) {
                        clean = clean(c, ranges);
                    } finally {
                        q.execute("block-export-del", Qmp.args("id", EXPORT));
                    }
                } finally {
                    q.execute("nbd-server-stop", null);
                }
            } finally {
                removeIfThere(q, dev.bitmapNode(), frozen);
            }
            if (running(q)) {
                throw new IOException("the VM was resumed by another monitor during the carry-out: nothing is "
                        + "punched, the notice waits for the next try");
            }
            for (Range r : discards(clean)) {
                String out = q.hmp("qemu-io " + dev.qemuIoTarget() + " \"discard " + r.offset() + " " + r.length() + "\"").strip();
                // QEMU 7.2's HMP qemu-io prints its report, success or "discard failed", on QEMU's own
                // stdout and answers nothing (measured); only errors of the monitor command itself
                // (no such device) come back. So: nothing, or qemu-io's report of the whole discard
                // where a QEMU sends it to the monitor, else an error. What a discard really freed is
                // measured apart (the backing file's allocation, `freed`).
                if (!out.isEmpty()
                        && !out.startsWith("discard " + r.length() + "/" + r.length() + " bytes at offset " + r.offset())) {
                    throw new IOException("QEMU discard of " + r.offset() + "+" + r.length() + ": " + out);
                }
            }
            done.run(clean, Math.max(0, before - allocated.getAsLong()), Map.of(
                    Skipped.WRITTEN_AFTER_FENCE, ByteRanges.of(ranges).bytes() - ByteRanges.of(clean).bytes()));
        } finally {
            if (running) {
                q.execute("cont", null);
                Files.deleteIfExists(pausedMarker());
            }
        }
        if (forget(token, ranges)) {
            try {
                removeBitmap(q, dev.bitmapNode(), bitmap);
            } catch (IOException e) {
                log.warn("reclaim image={}: removing bitmap {}: {}", imageFile, bitmap, e.getMessage());
            }
        }
    }

    /**
     * qemu-io's discard takes at most 2 GiB - 512 bytes, and says so only on QEMU's stdout (the
     * monitor answers nothing, as for a discard that worked): a review found a deleted file of
     * more than 2 GiB counted punched and nothing freed. In pieces of 1 GiB at most.
     */
    static List<Range> discards(List<Range> ranges) {
        List<Range> pieces = new ArrayList<>();
        for (Range r : ranges) {
            for (long at = r.offset(); at < r.end(); at += MAX_DISCARD) {
                pieces.add(new Range(at, Math.min(MAX_DISCARD, r.end() - at)));
            }
        }
        return pieces;
    }

    static final long MAX_DISCARD = 1L << 30;

    private static boolean running(Qmp q) throws IOException {
        return Qmp.bool(q.execute("query-status", null), "running", "QMP query-status");
    }

    /** Removes a bitmap of this daemon's own making, if the node has it. */
    private void removeIfThere(Qmp q, String node, String name) {
        try {
            removeBitmap(q, node, name);
        } catch (IOException e) {
            log.debug("reclaim image={}: no bitmap {} to remove: {}", imageFile, name, e.getMessage());
        }
    }

    private void carryOutOffline(long token, List<Range> ranges, Done done, String why) throws IOException {
        String bitmap = PREFIX + token;
        boolean held = hold.whileClosed(() -> {
            log.info("reclaim image={} offline ({}): the image is held closed", imageFile, why);
            // without --force-share: a QEMU that opened the store's file itself, not through the
            // mount, holds its lock, and qemu-img fails: the notice waits
            String info = Tool.run(TOOL_SECONDS, "qemu-img", "info", "-f", "qcow2", "--output=json", backingFile.toString());
            String untrusted = untrusted(bitmap(offlineBitmaps(info), bitmap, "qemu-img info bitmaps"), true);
            if (untrusted != null) {
                drop(token, ranges, done, bitmap, untrusted);
                return;
            }
            List<Range> clean = cleanOffline(bitmap, ranges);
            List<Range> punch = new ArrayList<>();
            List<Range> punchedForTheGuest = new ArrayList<>();
            Map<Qcow2Map.Skip, Long> skipped = new EnumMap<>(Qcow2Map.Skip.class);
            try (Qcow2Map map = Qcow2Map.open(backingFile)) {
                for (Range r : clean) {
                    Qcow2Map.Translation t = map.translate(r.offset(), r.length());
                    punch.addAll(t.punchable());
                    punchedForTheGuest.addAll(t.guest());
                    t.skipped().forEach((k, v) -> skipped.merge(k, v, Long::sum));
                }
            } catch (Qcow2Exception e) {
                drop(token, ranges, done, bitmap, e.getMessage());
                return;
            }
            long freed = 0;
            for (Range h : punch) {
                freed += puncher.punch(h.offset(), h.length());
            }
            log.info("reclaim image={} offline: {} bytes of data clusters punched, not punched {}", imageFile,
                    ByteRanges.of(punch).bytes(), skipped);
            Map<Skipped, Long> notPunched = new EnumMap<>(Skipped.class);
            notPunched.put(Skipped.WRITTEN_AFTER_FENCE,
                    ByteRanges.of(ranges).bytes() - ByteRanges.of(clean).bytes());
            skipped.forEach((reason, n) -> notPunched.merge(reason == Qcow2Map.Skip.PARTIAL_OR_OUTSIDE
                    ? Skipped.PARTIAL_BLOCK : Skipped.NOT_OWNED, n, Long::sum));
            // the guest's ranges, as the notices hold them: the file's offsets are no business of
            // theirs (a review found file offsets cut out of other notices, which lost their ranges)
            done.run(punchedForTheGuest, freed, notPunched);
            if (forget(token, ranges)) {
                removeOffline(bitmap);
            }
        });
        if (!held) {
            throw new IOException(why + ", and a process has the image open: the notice waits");
        }
    }

    /**
     * The image as qcow2 and nothing more, for the offline tools: its own file, no backing file.
     * What a header names is the guest's to write where a raw image was taken for qcow2, and the
     * bitmap needs none of it (a review found qemu-nbd opening the backing file a header named).
     */
    static String qcow2WithoutBacking(Path file) {
        ObjectNode o = Qmp.args("driver", "qcow2", "file", Qmp.args("driver", "file", "filename", file.toString()));
        o.putNull("backing");
        return "json:" + o;
    }

    /** Asks the qemu-nbd of the image file (read-only, with the bitmap) which parts of {@code ranges} it marks written. */
    private List<Range> cleanOffline(String bitmap, List<Range> ranges) throws IOException {
        Files.deleteIfExists(nbdSocket);
        Path out = nbdSocket.resolveSibling(nbdSocket.getFileName() + ".log");
        Process nbd = Tool.start(out, "qemu-nbd", "--read-only", "--socket=" + nbdSocket,
                "--export-name=" + EXPORT, "--bitmap=" + bitmap, qcow2WithoutBacking(backingFile));
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!Files.exists(nbdSocket)) {
                if (!nbd.isAlive() || System.nanoTime() > deadline) {
                    throw new IOException("qemu-nbd of " + backingFile + " with bitmap " + bitmap + " did not start: "
                            + Tool.tail(out));
                }
                Thread.sleep(20);
            }
            try (NbdClient c = NbdClient.connect(nbdSocket, EXPORT, DIRTY_BITMAP + bitmap)) {
                return clean(c, ranges);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted", e);
        } finally {
            Tool.stop(nbd);
            Files.deleteIfExists(nbdSocket);
            Files.deleteIfExists(out);
        }
    }

    private void removeOffline(String bitmap) {
        try {
            Tool.run(TOOL_SECONDS, "qemu-img", "bitmap", "--remove", "-f", "qcow2", backingFile.toString(), bitmap);
        } catch (IOException e) {
            log.warn("reclaim image={}: removing bitmap {}: {}", imageFile, bitmap, e.getMessage());
        }
    }

    /** The parts of {@code ranges} the export's bitmap does not mark written. */
    /** QEMU's meta context of a dirty bitmap over NBD, and its one state: written since the bitmap began. */
    private static final String DIRTY_BITMAP = "qemu:dirty-bitmap:";
    private static final int DIRTY = 1;

    private static List<Range> clean(NbdClient c, List<Range> ranges) throws IOException {
        List<Range> clean = new ArrayList<>();
        for (Range r : ranges) {
            ByteRanges left = ByteRanges.of(List.of(r));
            for (NbdClient.Status s : c.blockStatus(r.offset(), r.length())) {
                if ((s.flags() & DIRTY) != 0) {
                    left.remove(s.offset(), s.offset() + s.length());
                }
            }
            clean.addAll(left.list());
        }
        return clean;
    }

    /** The bitmap named {@code name} among {@code bitmaps} (looked up by name), or null. */
    static JsonNode bitmap(List<JsonNode> bitmaps, String name, String where) throws IOException {
        for (JsonNode b : bitmaps) {
            if (Qmp.text(b, "name", where).equals(name)) {
                return b;
            }
        }
        return null;
    }

    /** The bitmaps `qemu-img info --output=json` lists for a qcow2 image (format-specific.data.bitmaps). */
    static List<JsonNode> offlineBitmaps(String info) throws IOException {
        String where = "qemu-img info";
        JsonNode spec = Qmp.field(Qmp.parse(info, where), "format-specific", where);
        if (!Qmp.text(spec, "type", where + " format-specific").equals("qcow2")) {
            throw new IOException(where + ": format-specific type is " + spec.get("type") + ", not qcow2");
        }
        JsonNode list = Qmp.field(spec, "data", where + " format-specific").get("bitmaps"); // absent: none
        List<JsonNode> out = new ArrayList<>();
        if (list != null) {
            if (!list.isArray()) {
                throw new IOException(where + ": field 'bitmaps' is not an array");
            }
            list.forEach(out::add);
        }
        return out;
    }

    /**
     * Why {@code bitmap} (QEMU's JSON for it: query-block's BlockDirtyInfo with a QEMU, qemu-img
     * info's Qcow2BitmapInfo without; null if there is none) cannot prove what the guest wrote since
     * its token; null if it can. A field the verdict needs that is missing, or of another type, is
     * an IOException naming it: the notice waits, it is neither punched nor dropped on a guess.
     */
    static String untrusted(JsonNode bitmap, boolean offline) throws IOException {
        if (bitmap == null) {
            return "it is gone (a QEMU that died before storing it, or another image)";
        }
        boolean inconsistent;
        boolean recording;
        if (offline) {
            JsonNode flags = Qmp.field(bitmap, "flags", "qemu-img info bitmap");
            if (!flags.isArray()) {
                throw new IOException("qemu-img info bitmap: field 'flags' is not an array");
            }
            List<String> f = new ArrayList<>();
            flags.forEach(x -> f.add(x.asText()));
            inconsistent = f.contains("in-use");
            recording = f.contains("auto");
        } else {
            JsonNode i = bitmap.get("inconsistent"); // optional: present when true
            inconsistent = i != null && Qmp.bool(bitmap, "inconsistent", "QMP dirty bitmap");
            recording = Qmp.bool(bitmap, "recording", "QMP dirty bitmap");
        }
        if (inconsistent) {
            return "it is inconsistent (a QEMU died with it loaded): " + bitmap;
        }
        if (!recording) {
            return "it no longer records writes: " + bitmap;
        }
        return null;
    }

    /** Drops a notice whose fence cannot be trusted: nothing punched, the notice done. */
    private void drop(long token, List<Range> ranges, Done done, String bitmap, String why) throws IOException {
        log.warn("reclaim image={} bitmap {}: {}; the notice is dropped, nothing punched", imageFile, bitmap, why);
        done.run(List.of(), 0, Map.of(Skipped.FENCE_LOST, ByteRanges.of(ranges).bytes()));
        forget(token, ranges);
    }

    /** The ranges leave the token's pending bytes; true if nothing waits on it any more (its bitmap may go). */
    private synchronized boolean forget(long token, List<Range> ranges) {
        ByteRanges left = pendingByToken.get(token);
        if (left != null) {
            for (Range r : ranges) {
                left.remove(r.offset(), r.end());
            }
            if (!left.isEmpty()) {
                return false;
            }
        }
        pendingByToken.remove(token);
        live.remove(token);
        return true;
    }
}
