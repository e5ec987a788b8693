package vmfuse.reclaimer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static vmfuse.reclaimer.Tools.ok;
import static vmfuse.reclaimer.Tools.qemuIo;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import vmfuse.nbd.NbdClient;

/** Qmp and the nbd module's NbdClient against a real QEMU holding a qcow2 image (paused: no guest needed). */
@Tag("integration")
class QemuNbdTest {
    static final long K = 1024;
    static final long M = 1024 * K;

    @TempDir
    Path dir;

    private Process qemu(Path img, Path qmpSock) throws Exception {
        Process p = new ProcessBuilder("qemu-system-x86_64", "-S", "-accel", "tcg", "-nodefaults", "-display", "none",
                "-qmp", "unix:" + qmpSock + ",server=on,wait=off",
                "-drive", "file=" + img + ",format=qcow2,if=none,id=d0,discard=unmap",
                "-device", "virtio-blk-pci,drive=d0").redirectErrorStream(true)
                .redirectOutput(dir.resolve("qemu.out").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!Files.exists(qmpSock) && System.nanoTime() < deadline) {
            Thread.sleep(50);
        }
        return p;
    }

    /** A 64 MiB qcow2 image NAME.qcow2, after the qemu-io {@code writes}. */
    private Path image(String name, String... writes) throws Exception {
        Path img = dir.resolve(name + ".qcow2");
        ok("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "64M");
        if (writes.length > 0) {
            qemuIo(img, writes);
        }
        return img;
    }

    private static long allocated(Path img) {
        try {
            return Tools.allocated(img);
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    /** The fence of {@code img}; with no QEMU running, {@code hold} keeps it closed and fallocate punches it. */
    private QemuFence fence(Path img, Path qmpSock, ImageHold hold) {
        return new QemuFence(qmpSock, img, img, dir.resolve("nbd.sock"), () -> allocated(img), hold, (off, len) -> {
            long before = allocated(img);
            try {
                ok("fallocate", "--punch-hole", "--offset", "" + off, "--length", "" + len, img.toString());
            } catch (InterruptedException e) {
                throw new IOException(e);
            }
            return before - allocated(img);
        });
    }

    private static void hmp(Path qmpSock, String qemuIo) throws Exception {
        try (Qmp q = Qmp.connect(qmpSock)) {
            String out = q.hmp("qemu-io d0 \"" + qemuIo + "\"");
            assertTrue(!out.contains("failed") && !out.contains("rror"), out);
        }
    }

    private static void quit(Process qemu, Path qmpSock) throws Exception {
        try (Qmp q = Qmp.connect(qmpSock)) {
            q.execute("quit", null);
        }
        assertTrue(qemu.waitFor(30, TimeUnit.SECONDS), "QEMU quits");
    }

    /**
     * A guest that sends FENCE after FENCE has QEMU keep at most MAX_TOKENS bitmaps, each a cost on
     * every write: the oldest token nothing waits on goes (stale for a notice after), and when all
     * have notices waiting, FENCE is refused. A review found no bound.
     */
    @Test
    void fencesKeepAtMostMaxTokensBitmapsInQemu() throws Exception {
        Path img = image("tokens");
        Path qmpSock = dir.resolve("qmp-tokens.sock");
        QemuFence fence = fence(img, qmpSock, action -> false);
        Process qemu = qemu(img, qmpSock);
        try {
            long first = fence.token();
            fence.admit(first, List.of(new Range(0, M))); // waits: kept
            long second = fence.token();
            long last = second;
            for (int i = 0; i < QemuFence.MAX_TOKENS + 6; i++) {
                last = fence.token();
            }
            try (Qmp q = Qmp.connect(qmpSock)) {
                String blocks = q.execute("query-block", null).toString();
                int n = blocks.split("vmfuse-fence-", -1).length - 1;
                assertTrue(n <= QemuFence.MAX_TOKENS, n + " fence bitmaps in QEMU");
                assertTrue(blocks.contains("\"vmfuse-fence-" + first + "\""), "the token with a notice waiting is kept");
            }
            long evicted = second;
            assertThrows(ProtocolException.class, () -> fence.admit(evicted, List.of(new Range(0, M))));
            fence.admit(last, List.of(new Range(M, M)));
            quit(qemu, qmpSock);
        } finally {
            qemu.destroyForcibly();
        }
    }

    /**
     * Two notices of one token over the same range (an agent sends a range twice): once it is
     * punched, nothing waits on the token and its bitmap goes. A review found bytes counted per
     * notice, so the token never ended while the daemon ran.
     */
    @Test
    void aTokenWhoseNoticesOverlapEndsWhenItsRangesArePunched() throws Exception {
        Path img = image("overlap", "write -P 0x11 0 4m");
        Path qmpSock = dir.resolve("qmp-overlap.sock");
        QemuFence fence = fence(img, qmpSock, action -> false);
        Process qemu = qemu(img, qmpSock);
        try {
            long token = fence.token();
            fence.admit(token, List.of(new Range(0, 2 * M)));
            fence.admit(token, List.of(new Range(M, 2 * M)));
            assertEquals(3 * M, fence.pendingBytes());
            fence.carryOut(token, List.of(new Range(0, 3 * M)), (p, freed, skipped) -> { });
            assertEquals(0, fence.pendingBytes());
            try (Qmp q = Qmp.connect(qmpSock)) {
                String blocks = q.execute("query-block", null).toString();
                assertTrue(!blocks.contains("vmfuse-fence-" + token), "the token's bitmap went: " + blocks);
            }
            quit(qemu, qmpSock);
        } finally {
            qemu.destroyForcibly();
        }
    }

    /**
     * A deleted range of more than 2 GiB (a large file, merged into one range) is discarded whole
     * through the running QEMU: qemu-io refuses a discard above 2 GiB - 512 bytes, saying so only
     * on QEMU's stdout, and a review found such a notice counted punched with nothing discarded.
     */
    @Test
    void aDeletedRangeOfMoreThan2GiBIsDiscardedWhole() throws Exception {
        Path img = dir.resolve("big.qcow2");
        ok("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "4G");
        qemuIo(img, "write -P 0x11 0 64k", "write -P 0x11 2560m 64k", "write -P 0x22 3g 64k");
        Path qmpSock = dir.resolve("qmp-big.sock");
        QemuFence fence = fence(img, qmpSock, action -> false);
        Process qemu = qemu(img, qmpSock);
        try {
            long token = fence.token();
            fence.admit(token, List.of(new Range(0, 3L << 30)));
            List<Range> punched = new ArrayList<>();
            fence.carryOut(token, List.of(new Range(0, 3L << 30)), (p, freed, skipped) -> punched.addAll(p));
            assertEquals(List.of(new Range(0, 3L << 30)), punched);
            quit(qemu, qmpSock);
        } finally {
            qemu.destroyForcibly();
        }
        qemuIo(img, "read -P 0 0 64k", "read -P 0 2560m 64k", "read -P 0x22 3g 64k");
    }

    /**
     * A write that lands while a notice of a token is carried out is punched by no later notice of
     * that token. The VM is paused, not by the daemon (-S here; a `virsh suspend`), so the daemon
     * stops nothing, and another monitor's write stands in for a guest resumed meanwhile. A review
     * found the token's bitmap disabled for the carry-out: that write went unrecorded, and the
     * next notice punched it.
     */
    @Test
    void aWriteDuringACarryOutIsNeverPunchedByTheNextNoticeOfItsToken() throws Exception {
        Path img = image("gap", "write -P 0x11 0 16m");
        Path qmpSock = dir.resolve("qmp-gap.sock");
        Path other = dir.resolve("qmp-gap-other.sock");
        QemuFence fence = fence(img, qmpSock, action -> false);
        Process qemu = new ProcessBuilder("qemu-system-x86_64", "-S", "-accel", "tcg", "-nodefaults", "-display", "none",
                "-qmp", "unix:" + qmpSock + ",server=on,wait=off", "-qmp", "unix:" + other + ",server=on,wait=off",
                "-drive", "file=" + img + ",format=qcow2,if=none,id=d0,discard=unmap",
                "-device", "virtio-blk-pci,drive=d0").redirectErrorStream(true)
                .redirectOutput(dir.resolve("qemu-gap.out").toFile()).start();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!(Files.exists(qmpSock) && Files.exists(other)) && System.nanoTime() < deadline) {
                Thread.sleep(50);
            }
            long token = fence.token();
            fence.admit(token, List.of(new Range(0, M)));
            fence.admit(token, List.of(new Range(8 * M, M)));
            List<Range> first = new ArrayList<>();
            fence.carryOut(token, List.of(new Range(0, M)), (punched, freed, skipped) -> {
                first.addAll(punched);
                try {
                    hmp(other, "write -P 0x55 8M 1M");
                } catch (Exception e) {
                    throw new IOException(e);
                }
            });
            assertEquals(List.of(new Range(0, M)), first);
            List<Range> second = new ArrayList<>();
            fence.carryOut(token, List.of(new Range(8 * M, M)), (punched, freed, skipped) -> second.addAll(punched));
            assertEquals(List.of(), second, "what was written during the first carry-out is not punched");
            quit(qemu, other);
        } finally {
            qemu.destroyForcibly();
        }
        qemuIo(img, "read -P 0 0 1M", "read -P 0x55 8M 1M");
    }

    /**
     * With no QEMU running (it quit after the notice came): the bitmap QEMU stored in the image
     * tells what the guest wrote since the token; Qcow2Map punches the rest where this image alone
     * owns the data cluster, never a snapshot's or a compressed one; the bitmap is removed.
     */
    @Test
    void withNoQemuRunningTheImageIsPunchedWhereItAloneOwnsTheClustersAndNotWhereTheGuestWroteSince()
            throws Exception {
        Path img = image("off", "write -P 0x11 0 16m");
        ok("qemu-img", "snapshot", "-c", "s1", img.toString()); // 0..16M shared with s1 ...
        qemuIo(img, "write -P 0x22 0 12m", "write -c -P 0x44 16m 1m"); // ... but 0..12M copied again; compressed
        Path qmpSock = dir.resolve("qmp-off.sock");
        java.util.concurrent.atomic.AtomicInteger held = new java.util.concurrent.atomic.AtomicInteger();
        QemuFence fence = fence(img, qmpSock, action -> {
            held.incrementAndGet();
            action.run();
            return true;
        });
        long token;
        Process qemu = qemu(img, qmpSock);
        try {
            token = fence.token();
            hmp(qmpSock, "write -P 0x33 4M 1M"); // the guest reuses 1 MiB of what it deleted, after the token
            fence.admit(token, List.of(new Range(0, 17 * M)));
            quit(qemu, qmpSock);
        } finally {
            qemu.destroyForcibly();
        }
        assertTrue(ok("qemu-img", "info", img.toString()).contains("vmfuse-fence-" + token), "QEMU stored the bitmap");
        long before = Tools.allocated(img);
        List<Range> punched = new ArrayList<>();
        Map<Skipped, Long> notPunched = new EnumMap<>(Skipped.class);
        fence.carryOut(token, List.of(new Range(0, 17 * M)), (done, freed, skipped) -> {
            punched.addAll(done);
            notPunched.putAll(skipped);
        });
        assertEquals(1, held.get(), "the image was held closed");
        assertEquals(Map.of(Skipped.WRITTEN_AFTER_FENCE, 1 * M, Skipped.NOT_OWNED, 5 * M),
                notPunched);
        assertEquals(11 * M, punched.stream().mapToLong(r -> r.length()).sum(), "0..4M and 5..12M: the rest is the guest's "
                + "since the token (4..5M), the snapshot's (12..16M) or compressed (16..17M)");
        assertEquals(List.of(new Range(0, 4 * M), new Range(5 * M, 7 * M)), ByteRanges.of(punched).list(),
                "told as the guest's ranges, which the notices hold (the file's were told: other notices lost theirs)");
        assertEquals(0, fence.pendingBytes());
        Tools.Result check = Tools.run("qemu-img", "check", img.toString());
        assertEquals(0, check.exit(), check.out() + check.err());
        qemuIo(img, "read -P 0 0 4m", "read -P 0x33 4m 1m", "read -P 0 5m 7m", "read -P 0x11 12m 4m",
                "read -P 0x44 16m 1m", "read -P 0 17m 47m");
        Path s1 = dir.resolve("s1.raw");
        ok("qemu-img", "convert", "-l", "snapshot.name=s1", "-O", "raw", img.toString(), s1.toString());
        ok("qemu-io", "-f", "raw", "-c", "read -P 0x11 0 16m", s1.toString());
        assertTrue(!ok("qemu-img", "info", img.toString()).contains("vmfuse-fence-"), "the bitmap is removed");
        assertTrue(before - Tools.allocated(img) >= 11 * M - 64 * K, "allocated " + before + " -> " + Tools.allocated(img));
    }

    /** A QEMU killed with the bitmap never stored it: nothing proves what the guest wrote, nothing is punched. */
    @Test
    void aQemuThatDiedTookTheFenceWithItAndTheNoticeIsDropped() throws Exception {
        Path img = image("dead", "write -P 0x11 0 8m");
        Path qmpSock = dir.resolve("qmp-dead.sock");
        QemuFence fence = fence(img, qmpSock, action -> {
            action.run();
            return true;
        });
        Process qemu = qemu(img, qmpSock);
        long token;
        try {
            token = fence.token();
            hmp(qmpSock, "write -P 0x33 1M 1M");
            fence.admit(token, List.of(new Range(0, 8 * M)));
        } finally {
            qemu.destroyForcibly(); // kill -9
            qemu.waitFor(30, TimeUnit.SECONDS);
        }
        List<Range> punched = new ArrayList<>();
        Map<Skipped, Long> notPunched = new EnumMap<>(Skipped.class);
        fence.carryOut(token, List.of(new Range(0, 8 * M)), (done, freed, skipped) -> {
            punched.addAll(done);
            notPunched.putAll(skipped);
        });
        assertEquals(0, punched.size());
        assertEquals(Map.of(Skipped.FENCE_LOST, 8 * M), notPunched);
        assertEquals(0, fence.pendingBytes(), "dropped");
        qemuIo(img, "read -P 0x11 0 1m", "read -P 0x33 1m 1m", "read -P 0x11 2m 6m");
    }

    /** No QEMU answers, but a process has the image open: nothing is read or punched, the notice waits. */
    @Test
    void anImageAProcessHasOpenIsLeftAloneAndTheNoticeWaits() throws Exception {
        Path img = image("open", "write -P 0x11 0 8m");
        Path qmpSock = dir.resolve("qmp-open.sock");
        QemuFence fence = fence(img, qmpSock, action -> false);
        Process qemu = qemu(img, qmpSock);
        long token;
        try {
            token = fence.token();
            fence.admit(token, List.of(new Range(0, 8 * M)));
            quit(qemu, qmpSock);
        } finally {
            qemu.destroyForcibly();
        }
        IOException e = assertThrows(IOException.class,
                () -> fence.carryOut(token, List.of(new Range(0, 8 * M)), (done, freed, skipped) -> {
                    throw new AssertionError("nothing may be punched");
                }));
        assertTrue(e.getMessage().contains("has the image open"), e.getMessage());
        assertEquals(8 * M, fence.pendingBytes(), "it waits");
        qemuIo(img, "read -P 0x11 0 8m");
    }

    /** A QEMU that does not answer (stopped with SIGSTOP) fails the QMP call after the timeout; nothing hangs. */
    @Test
    void aQemuThatDoesNotAnswerFailsTheCallInsteadOfHangingIt() throws Exception {
        Path img = image("hung");
        Path qmpSock = dir.resolve("qmp-hung.sock");
        Process qemu = qemu(img, qmpSock);
        try {
            try (Qmp q = Qmp.connect(qmpSock, Duration.ofSeconds(5))) {
                ok("kill", "-STOP", "" + qemu.pid());
                long t0 = System.nanoTime();
                IOException e = assertThrows(IOException.class,
                        () -> q.execute("query-status", null));
                assertTrue(e.getMessage().contains("did not answer within 5.0 s"), e.getMessage());
                assertTrue(System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(20));
            }
            IOException e = assertThrows(IOException.class,
                    () -> Qmp.connect(qmpSock, Duration.ofSeconds(1)));
            assertTrue(e.getMessage().contains("did not answer"), e.getMessage());
        } finally {
            Tools.run("kill", "-CONT", "" + qemu.pid());
            qemu.destroyForcibly();
            qemu.waitFor(30, TimeUnit.SECONDS);
        }
    }

    /** A daemon that died while its carry-out had the VM stopped: the next one lets the VM run again. */
    @Test
    void aVmLeftPausedByAnUnfinishedReclaimRunsAgainWhenTheNextDaemonStarts() throws Exception {
        Path img = image("paused");
        Path qmpSock = dir.resolve("qmp-paused.sock");
        Process qemu = qemu(img, qmpSock);
        try {
            try (Qmp q = Qmp.connect(qmpSock)) {
                q.execute("cont", null);
                q.execute("stop", null); // what a carry-out does first, after writing its marker
            }
            Files.write(dir.resolve("nbd.sock.paused"), new byte[0]);
            QemuFence next = fence(img, qmpSock, action -> {
                throw new AssertionError("not offline");
            });
            next.resumeIfLeftPaused();
            try (Qmp q = Qmp.connect(qmpSock)) {
                assertTrue(q.execute("query-status", null).get("running").asBoolean(), "running again");
            }
            assertTrue(!Files.exists(dir.resolve("nbd.sock.paused")));
            next.resumeIfLeftPaused(); // no marker: nothing to do
        } finally {
            qemu.destroyForcibly();
            qemu.waitFor(30, TimeUnit.SECONDS);
        }
    }

    /** QemuFence: what the guest wrote after the token stays; the rest is discarded by QEMU. */
    /**
     * Issue 14, found by bench-stall: a carry-out waiting on a SIGSTOPped QEMU held the fence's
     * monitor, so `vmfuse status` (stats) and the agent's next notice waited on it, up to QMP's
     * timeout; and once QEMU went on, the carry-out's Done (which takes the reclaimer's monitor)
     * and a status call (holding it, waiting for the fence's) deadlocked for good. Now the
     * carry-out holds only the fence's QEMU lock: both answer at once, and the carry-out finishes.
     */
    @Test
    void aCarryOutWaitingOnAStoppedQemuLeavesStatusAndNoticesServed() throws Exception {
        Path img = image("stopped", "write -P 0x11 0 16m");
        Path qmpSock = dir.resolve("qmp-stopped.sock");
        Process qemu = qemu(img, qmpSock);
        ThresholdPolicy never = new ThresholdPolicy(1000, 1000);
        try (VmReclaimer r = VmReclaimer.open("vm", "stopped.qcow2", () -> 64 * M, fence(img, qmpSock, action -> {
            throw new AssertionError("the image was to be held closed while a QEMU runs it");
        }), never, dir.resolve("vm.notices"))) {
            AgentSession s = new AgentSession(r);
            s.handle("HELLO vmfuse-agent 1");
            long token = Long.parseLong(s.handle("FENCE").substring(6));
            assertEquals("ACK 1", s.handle("NOTICE 1 " + token + " 0 0:" + 8 * M));
            ok("kill", "-STOP", "" + qemu.pid());
            java.util.concurrent.CompletableFuture<VmReclaimer.Stats> reclaim =
                    java.util.concurrent.CompletableFuture.supplyAsync(() -> {
                        try {
                            return r.reclaimNow();
                        } catch (IOException e) {
                            throw new java.io.UncheckedIOException(e);
                        }
                    });
            Thread.sleep(1000); // the carry-out is waiting on QEMU
            assertTrue(!reclaim.isDone(), "the carry-out waits on the stopped QEMU");
            org.junit.jupiter.api.Assertions.assertTimeoutPreemptively(Duration.ofSeconds(10), () -> {
                assertEquals(8 * M, r.stats().bytesPending());
                assertEquals("ACK 2", s.handle("NOTICE 2 " + token + " 0 " + 8 * M + ":" + M));
                assertEquals(9 * M, r.stats().bytesPending());
            }, "status and the agent are answered while a carry-out waits on QEMU");
            ok("kill", "-CONT", "" + qemu.pid());
            assertEquals(8 * M, reclaim.get(120, TimeUnit.SECONDS).bytesPunched(), "notice 1, once QEMU went on");
            VmReclaimer.Stats second = r.reclaimNow();
            assertEquals(9 * M, second.bytesPunched(), "then notice 2, which came meanwhile: " + second);
            assertEquals(0, r.stats().bytesPending());
        } finally {
            Tools.run("kill", "-CONT", "" + qemu.pid());
            qemu.destroyForcibly();
            qemu.waitFor(30, TimeUnit.SECONDS);
        }
    }

    @Test
    void theQemuFenceLeavesWhatWasWrittenAfterTheTokenAndDiscardsTheRest() throws Exception {
        Path img = image("f", "write -P 0x11 0 16m");
        long before = Tools.allocated(img);
        Path qmpSock = dir.resolve("qmp2.sock");
        Process qemu = qemu(img, qmpSock);
        try {
            QemuFence fence = fence(img, qmpSock, action -> {
                throw new AssertionError("the image was to be held closed while a QEMU runs it");
            });
            long token = fence.token();
            hmp(qmpSock, "write -P 0x33 4M 1M"); // the guest reuses 1 MiB of what it deleted, after the token
            List<Range> admitted = fence.admit(token, List.of(new Range(0, 16 * M)));
            assertEquals(16 * M, fence.pendingBytes());
            List<Range> punched = new ArrayList<>();
            fence.carryOut(token, admitted, (done, freed, skipped) -> punched.addAll(done));
            assertEquals(15 * M, punched.stream().mapToLong(r -> r.length()).sum());
            assertEquals(0, fence.pendingBytes());
            assertEquals("stale-fence", assertThrows(ProtocolException.class,
                    () -> fence.admit(token + 99, List.of(new Range(0, 4096)))).reason());
            try (Qmp q = Qmp.connect(qmpSock)) {
                assertTrue(!q.execute("query-block", null).toString().contains("vmfuse-fence-"),
                        "the token's bitmap is removed");
                q.execute("quit", null);
            }
            assertTrue(qemu.waitFor(30, TimeUnit.SECONDS));
        } finally {
            qemu.destroyForcibly();
        }
        assertEquals(0, Tools.run("qemu-img", "check", img.toString()).exit());
        qemuIo(img, "read -P 0x33 4m 1m", "read -P 0 0 4m", "read -P 0 5m 11m");
        assertTrue(before - Tools.allocated(img) >= 14 * M, "allocated " + before + " -> " + Tools.allocated(img));
    }

    @Test
    void aDirtyBitmapShowsWritesSinceItsCreationAndTrimFreesClustersThroughQemu() throws Exception {
        Path img = image("d", "write -P 0x11 0 8m");
        long before = Tools.allocated(img);
        Path qmpSock = dir.resolve("qmp.sock");
        Process qemu = qemu(img, qmpSock);
        try {
            try (Qmp q = Qmp.connect(qmpSock)) {
                q.execute("block-dirty-bitmap-add", Qmp.args("node", "d0", "name", "t1"));
                q.hmp("qemu-io d0 \"write -P 0x22 1M 64k\"");
                String node = q.execute("query-block", null).get(0).get("inserted").get("node-name").asText();
                q.execute("block-dirty-bitmap-disable", Qmp.args("node", "d0", "name", "t1"));
                Path nbdSock = dir.resolve("nbd.sock");
                q.execute("nbd-server-start", Qmp.args("addr", Qmp.args("type", "unix", "data",
                        Qmp.args("path", nbdSock.toString()))));
                q.execute("block-export-add", Qmp.args("type", "nbd", "id", "e1", "node-name", node, "name", "d0",
                        "writable", false, "bitmaps", Qmp.array("t1")));
                try (NbdClient c = NbdClient.connect(nbdSock, "d0", "qemu:dirty-bitmap:t1")) {
                    List<NbdClient.Status> dirty = c.blockStatus(0, 8 * M).stream().filter(st -> (st.flags() & 1) != 0)
                            .toList();
                    assertEquals(1, dirty.size());
                    assertEquals(1 * M, dirty.get(0).offset());
                    assertEquals(64 * K, dirty.get(0).length());
                }
                String out = q.hmp("qemu-io d0 \"discard 4M 4M\"");
                assertTrue(out.isEmpty() || out.startsWith("discard 4194304/4194304 bytes at offset 4194304"), out);
                assertTrue(q.hmp("qemu-io nodev \"discard 0 4k\"").contains("Cannot find device"),
                        "the monitor's own errors come back (qemu-io's do not: they go to QEMU's stdout)");
                q.execute("block-export-del", Qmp.args("id", "e1"));
                q.execute("quit", null);
            }
            assertTrue(qemu.waitFor(30, TimeUnit.SECONDS));
        } finally {
            qemu.destroyForcibly();
        }
        Tools.Result check = Tools.run("qemu-img", "check", img.toString());
        assertEquals(0, check.exit(), check.out() + check.err());
        qemuIo(img, "read -P 0x11 0 1m", "read -P 0x22 1m 64k", "read -P 0 4m 4m");
        String map = ok("qemu-img", "map", "--output=json", img.toString());
        assertTrue(map.contains("{ \"start\": 4194304, \"length\": 4194304, \"depth\": 0, \"present\": true, \"zero\": true, "
                + "\"data\": false}"), map);
        assertTrue(before - Tools.allocated(img) >= 4 * M - 64 * K, "allocated " + before + " -> " + Tools.allocated(img));
    }
}
