package vmfuse.reclaimer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.function.LongSupplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/*
 * The fence of a qcow2 image a running QEMU holds, kept by QEMU itself over its QMP socket.
 * Never parse qcow2 metadata under a live QEMU: its L2 cache may be newer than the file. So:
 *
 *   token()     adds a dirty bitmap "vmfuse-fence-N" on the drive: from now on QEMU marks every
 *               guest write, in guest offsets
 *   admit()     a notice's token must name a bitmap this daemon made and still has
 *   carryOut()  stops the VM (no guest write until cont; QEMU drains what is in flight), freezes
 *               the notice's bitmap, exports the drive read-only over NBD on a unix socket and
 *               asks which of the notice's ranges the bitmap marks written (NBD block status,
 *               context qemu:dirty-bitmap:NAME); discards the rest through QEMU
 *               (human-monitor-command qemu-io "discard", so the qcow2 driver frees the clusters
 *               and, with the drive's discard=unmap, punches the file); removes the export; lets
 *               the VM run again if it was running
 *
 * A token's bitmap is removed when no waiting notice needs it, or after 300 s if no notice came.
 * After a daemon restart the bitmaps of a QEMU still running are found again by name; a notice
 * whose bitmap is gone (QEMU restarted) is dropped, never punched.
 */
public final class QemuFence implements Fence {
    private static final Logger log = LoggerFactory.getLogger(QemuFence.class);
    private static final String PREFIX = "vmfuse-fence-";
    private static final long TTL_NANOS = TimeUnit.SECONDS.toNanos(300);

    private final Path qmpSocket;
    private final Path imageFile;
    private final Path nbdSocket;
    private final LongSupplier allocated;
    // guarded by this
    private long next = WriteTracker.newEpoch();
    private final Map<Long, Long> live = new TreeMap<>(); // token -> issued (nanoTime)
    private final Map<Long, Long> pendingByToken = new TreeMap<>(); // token -> bytes waiting

    /**
     * The fence of the image at {@code imageFile} (as QEMU opened it) over the QMP socket
     * {@code qmpSocket}; {@code nbdSocket} is where a carry-out exports the drive;
     * {@code allocated} gives the image file's allocated bytes (to count what a discard freed).
     */
    public QemuFence(Path qmpSocket, Path imageFile, Path nbdSocket, LongSupplier allocated) {
        this.qmpSocket = qmpSocket;
        this.imageFile = imageFile;
        this.nbdSocket = nbdSocket;
        this.allocated = allocated;
    }

    /** The QEMU device (drive id) and node whose image is {@code imageFile}. */
    private String[] device(Qmp q) throws IOException {
        String blocks = q.execute("query-block", null);
        Matcher m = Pattern.compile("\"device\": \"([^\"]*)\"").matcher(blocks);
        List<Integer> starts = new ArrayList<>();
        List<String> names = new ArrayList<>();
        while (m.find()) {
            starts.add(m.start());
            names.add(m.group(1));
        }
        for (int i = 0; i < starts.size(); i++) {
            String one = blocks.substring(starts.get(i), i + 1 < starts.size() ? starts.get(i + 1) : blocks.length());
            Matcher file = Pattern.compile("\"file\": \"([^\"]*)\"").matcher(one);
            Matcher node = Pattern.compile("\"node-name\": \"([^\"]*)\"").matcher(one);
            if (file.find() && node.find() && Path.of(file.group(1)).normalize().equals(imageFile.normalize())) {
                return new String[] {names.get(i), node.group(1)};
            }
        }
        throw new IOException("no drive of the QEMU at " + qmpSocket + " has " + imageFile + " open");
    }

    @Override
    public synchronized long token() throws IOException {
        sweep();
        long t = ++next;
        try (Qmp q = Qmp.connect(qmpSocket)) {
            String dev = device(q)[0];
            q.execute("block-dirty-bitmap-add", "{\"node\": " + Qmp.str(dev) + ", \"name\": " + Qmp.str(PREFIX + t) + "}");
        }
        live.put(t, System.nanoTime());
        return t;
    }

    /** Removes the bitmaps of tokens nothing waits on and no notice used within the TTL. */
    private void sweep() {
        long now = System.nanoTime();
        List<Long> old = new ArrayList<>();
        for (Map.Entry<Long, Long> e : live.entrySet()) {
            if (now - e.getValue() > TTL_NANOS && !pendingByToken.containsKey(e.getKey())) {
                old.add(e.getKey());
            }
        }
        for (long t : old) {
            removeBitmap(t);
        }
    }

    private void removeBitmap(long t) {
        live.remove(t);
        try (Qmp q = Qmp.connect(qmpSocket)) {
            q.execute("block-dirty-bitmap-remove", "{\"node\": " + Qmp.str(device(q)[0]) + ", \"name\": "
                    + Qmp.str(PREFIX + t) + "}");
        } catch (IOException e) {
            log.debug("removing bitmap {}{}: {}", PREFIX, t, e.getMessage());
        }
    }

    @Override
    public synchronized List<long[]> admit(long token, List<long[]> ranges) throws ProtocolException {
        if (!live.containsKey(token)) {
            throw new ProtocolException("stale-fence", "fence token " + token + " is not a live token of this daemon");
        }
        live.put(token, System.nanoTime());
        long bytes = ByteRanges.of(ranges).bytes();
        if (bytes > 0) {
            pendingByToken.merge(token, bytes, Long::sum);
        }
        return ByteRanges.of(ranges).list();
    }

    @Override
    public synchronized void restore(long token, List<long[]> ranges) {
        live.putIfAbsent(token, System.nanoTime()); // checked against QEMU's bitmaps at carry-out
        pendingByToken.merge(token, ByteRanges.of(ranges).bytes(), Long::sum);
    }

    @Override
    public synchronized long pendingBytes() {
        return pendingByToken.values().stream().mapToLong(Long::longValue).sum();
    }

    @Override
    public synchronized void carryOut(long token, List<long[]> ranges, Done done) throws IOException {
        String bitmap = PREFIX + token;
        List<long[]> clean = new ArrayList<>();
        long before = allocated.getAsLong();
        try (Qmp q = Qmp.connect(qmpSocket)) {
            String[] dev = device(q);
            if (!q.execute("query-block", null).contains("\"name\": \"" + bitmap + "\"")) {
                log.warn("reclaim image={} bitmap {} is gone (QEMU restarted?): notice dropped, nothing punched",
                        imageFile, bitmap);
                forget(token, ranges);
                done.run(List.of(), 0);
                return;
            }
            boolean running = q.execute("query-status", null).contains("\"running\": true");
            if (running) {
                q.execute("stop", null);
            }
            try {
                q.execute("block-dirty-bitmap-disable", "{\"node\": " + Qmp.str(dev[0]) + ", \"name\": " + Qmp.str(bitmap) + "}");
                Files.deleteIfExists(nbdSocket);
                q.execute("nbd-server-start", "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": "
                        + Qmp.str(nbdSocket.toString()) + "}}}");
                try {
                    q.execute("block-export-add", "{\"type\": \"nbd\", \"id\": \"vmfuse-reclaim\", \"node-name\": "
                            + Qmp.str(dev[1]) + ", \"name\": \"vmfuse-reclaim\", \"writable\": false, \"bitmaps\": ["
                            + Qmp.str(bitmap) + "]}");
                    try (NbdClient c = NbdClient.connect(nbdSocket, "vmfuse-reclaim", bitmap)) {
                        for (long[] r : ranges) {
                            ByteRanges left = ByteRanges.of(List.of(r));
                            for (long[] d : c.dirty(r[0], r[1])) {
                                left.remove(d[0], d[0] + d[1]);
                            }
                            clean.addAll(left.list());
                        }
                    } finally {
                        q.execute("block-export-del", "{\"id\": \"vmfuse-reclaim\"}");
                    }
                } finally {
                    q.execute("nbd-server-stop", null);
                }
                for (long[] r : clean) {
                    String out = q.execute("human-monitor-command", "{\"command-line\": " + Qmp.str(
                            "qemu-io " + dev[0] + " \"discard " + r[0] + " " + r[1] + "\"") + "}");
                    if (out.contains("failed") || out.contains("rror")) {
                        throw new IOException("QEMU discard of " + r[0] + "+" + r[1] + ": " + out);
                    }
                }
                done.run(clean, Math.max(0, before - allocated.getAsLong()));
            } finally {
                if (running) {
                    q.execute("cont", null);
                }
            }
        }
        forget(token, ranges);
    }

    private void forget(long token, List<long[]> ranges) {
        long left = pendingByToken.getOrDefault(token, 0L) - ByteRanges.of(ranges).bytes();
        if (left > 0) {
            pendingByToken.put(token, left);
        } else {
            pendingByToken.remove(token);
            removeBitmap(token);
        }
    }
}
