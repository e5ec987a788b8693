package vmfuse.reclaimer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The agent protocol against a VmReclaimer whose punches are recorded, and over a real unix socket. */
class AgentSessionTest {
    static final long M = 1 << 20;
    static final long DISK = 64 * M;

    @TempDir
    Path dir;

    final List<String> punched = new ArrayList<>();

    private VmReclaimer reclaimer(WriteTracker t, double freeFraction) throws Exception {
        return reclaimer(t, new ThresholdPolicy((long) (freeFraction * 1000), 1000));
    }

    private VmReclaimer reclaimer(WriteTracker t, ThresholdPolicy policy) throws Exception {
        return VmReclaimer.open("vm1", "vm1.raw", () -> DISK, new RawFence(t, (off, len) -> {
            synchronized (punched) {
                punched.add(off + ":" + len);
            }
            return len;
        }), policy, dir.resolve("vm1.notices"));
    }

    /**
     * Two notices over one range (an agent that crashed while it split a notice sends ranges
     * twice): once the range is punched for the first, it leaves the second too, so what the
     * guest writes there afterwards is not punched when the second is carried out, here after a
     * clean restart (found by a review: the second kept it in its log entry, and the write, which
     * found the range no longer pending, cut nothing).
     */
    @Test
    void aRangePunchedForOneNoticeLeavesEveryNoticeThatHoldsIt() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        ThresholdPolicy never = new ThresholdPolicy(1000, 1000);
        Puncher failingOnS = (off, len) -> {
            if (off == 8 * M) {
                throw new java.io.IOException("EIO");
            }
            synchronized (punched) {
                punched.add(off + ":" + len);
            }
            return len;
        };
        try (VmReclaimer r = VmReclaimer.open("vm1", "vm1.raw", () -> DISK, new RawFence(t, failingOnS), never,
                dir.resolve("vm1.notices"))) {
            AgentSession s = new AgentSession(r);
            s.handle("HELLO vmfuse-agent 1");
            long token = Long.parseLong(s.handle("FENCE").substring(6));
            assertEquals("ACK 1", s.handle("NOTICE 1 " + token + " 0 0:" + M));
            assertEquals("ACK 2", s.handle("NOTICE 2 " + token + " 0 " + 8 * M + ":" + M));
            assertEquals("ACK 3", s.handle("NOTICE 3 " + token + " 0 0:" + M)); // the first range again
            assertThrows(java.io.IOException.class, r::reclaimNow, "notice 2's punch fails: notice 3 waits");
            assertEquals(List.of("0:" + M), punched);
            t.beginWrite(4096, 4096); // the guest writes a new file where notice 1 was punched
            t.endWrite();
        }
        punched.clear();
        try (VmReclaimer r = reclaimer(new WriteTracker(WriteTracker.newEpoch()), 0.0)) {
            r.reclaimNow();
            assertEquals(List.of(8 * M + ":" + M), punched, "notice 2 again, and nothing of notice 3's range");
        }
    }

    /**
     * close() ends the punch running and carries out no notice after it: its owner then stops
     * counting the image's writes, and a write from then on is not seen by any notice (a review
     * found `vm remove` stopping the count first, with notices still to carry out).
     */
    @Test
    void closeWaitsForThePunchRunningAndCarriesOutNoOtherNotice() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        java.util.concurrent.CountDownLatch inFirst = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        Puncher blocking = (off, len) -> {
            if (off == 0) {
                inFirst.countDown();
                try {
                    assertTrue(release.await(30, TimeUnit.SECONDS));
                } catch (InterruptedException e) {
                    throw new java.io.IOException(e);
                }
            }
            synchronized (punched) {
                punched.add(off + ":" + len);
            }
            return len;
        };
        VmReclaimer r = VmReclaimer.open("vm1", "vm1.raw", () -> DISK, new RawFence(t, blocking),
                new ThresholdPolicy(1000, 1000), dir.resolve("vm1.notices"));
        AgentSession s = new AgentSession(r);
        s.handle("HELLO vmfuse-agent 1");
        long token = Long.parseLong(s.handle("FENCE").substring(6));
        s.handle("NOTICE 1 " + token + " 0 0:" + M);
        s.handle("NOTICE 2 " + token + " 0 " + 8 * M + ":" + M);
        Thread reclaiming = new Thread(() -> {
            try {
                r.reclaimNow();
            } catch (Exception e) {
                // what it did is in `punched`
            }
        });
        reclaiming.start();
        assertTrue(inFirst.await(30, TimeUnit.SECONDS));
        Thread closing = new Thread(() -> {
            try {
                r.close();
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
        closing.start();
        Thread.sleep(200); // close() is waiting for the punch
        assertTrue(closing.isAlive(), "close() waits for the punch running");
        release.countDown();
        closing.join(30_000);
        reclaiming.join(30_000);
        assertFalse(r.punching());
        assertEquals(List.of("0:" + M), punched, "notice 2 is not carried out once close() began");
    }

    @Test
    void aSessionFencesAcknowledgesAndRefusesAsTheProtocolSays() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        try (VmReclaimer r = reclaimer(t, 0.0)) { // threshold 0: every notice is carried out at once
            AgentSession s = new AgentSession(r);
            assertTrue(s.handle("FENCE").startsWith("ERROR the first line must be HELLO"));
            assertEquals("HELLO vmfuse 1 0", s.handle("HELLO vmfuse-agent 1"));
            assertEquals("HELLO vmfuse 1 0", s.handle("HELLO vmfuse-agent 1"), "greeting again is fine");
            String fence = s.handle("FENCE");
            long token = Long.parseLong(fence.substring(6));
            assertEquals("ACK 1", s.handle("NOTICE 1 " + token + " 8192 4096:8192"));
            assertEquals("ACK 1", s.handle("NOTICE 1 " + token + " 8192 4096:8192"), "a resend is acknowledged again");
            assertEquals("ACK 2", s.handle("NOTICE 2 " + token + " 100 1000:100,65536:10000"));
            r.awaitIdle();
            assertEquals(List.of("4096:8192", "65536:8192"), punched, "whole 4 KiB blocks only, once each");
            assertEquals("HELLO vmfuse 1 2", s.handle("HELLO vmfuse-agent 1"), "the greeting names the last seq logged");
            assertEquals("REFUSED 3 out-of-range", s.handle("NOTICE 3 " + token + " 1 " + (DISK - 4096) + ":8192"));
            assertEquals("REFUSED 4 stale-fence", s.handle("NOTICE 4 12345 1 0:4096"));
            assertEquals("REFUSED 5 malformed", s.handle("NOTICE 5 " + token + " 1 0:0"));
            assertEquals("REFUSED 6 malformed", s.handle("NOTICE 6 " + token + " 1 a:b"));
            assertTrue(s.handle("NOTICE -1 1 1 0:1").startsWith("ERROR "));
            assertTrue(s.handle("REBOOT").startsWith("ERROR unknown request"));
            VmReclaimer.Stats st = r.stats();
            assertEquals(2, st.notices());
            assertEquals(16384, st.bytesPunched());
            assertEquals(100 + 10000 - 8192, st.skipped().get(Skipped.PARTIAL_BLOCK));
            assertTrue(st.refused() >= 6, st.toString());
        }
    }

    @Test
    void aNoticeBelowTheThresholdWaitsUntilTheSumCrossesIt() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        try (VmReclaimer r = reclaimer(t, 0.25)) { // 16 MiB of the 64 MiB disk
            AgentSession s = new AgentSession(r);
            s.handle("HELLO vmfuse-agent 1");
            long token = Long.parseLong(s.handle("FENCE").substring(6));
            assertEquals("ACK 1", s.handle("NOTICE 1 " + token + " 0 0:" + 8 * M));
            r.awaitIdle();
            assertEquals(List.of(), punched);
            assertEquals(8 * M, r.stats().bytesPending());
            assertEquals("ACK 2", s.handle("NOTICE 2 " + token + " 0 " + 8 * M + ":" + 8 * M));
            r.awaitIdle();
            assertEquals(List.of("0:" + 8 * M, 8 * M + ":" + 8 * M), punched);
        }
    }

    /** The disk fills (the threshold halves): what waits goes at the next look, with no new notice. */
    @Test
    void aWaitingNoticeGoesWhenTheDiskFillsAndOnDemand() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        ThresholdPolicy policy = new ThresholdPolicy(250, 1000); // 16 MiB of the 64 MiB disk
        try (VmReclaimer r = reclaimer(t, policy)) {
            AgentSession s = new AgentSession(r);
            s.handle("HELLO vmfuse-agent 1");
            long token = Long.parseLong(s.handle("FENCE").substring(6));
            assertEquals("ACK 1", s.handle("NOTICE 1 " + token + " 0 0:" + 12 * M));
            r.reconsider();
            r.awaitIdle();
            assertEquals(List.of(), punched, "12 MiB waits below 16");
            policy.observeDisk(200, 1000); // 0.125: 8 MiB
            r.reconsider();
            r.awaitIdle();
            assertEquals(List.of("0:" + 12 * M), punched);
            assertEquals(0, r.stats().bytesPending());

            assertEquals("ACK 2", s.handle("NOTICE 2 " + Long.parseLong(s.handle("FENCE").substring(6)) + " 0 "
                    + 16 * M + ":" + 4 * M));
            r.awaitIdle();
            assertEquals(4 * M, r.stats().bytesPending(), "4 MiB waits below 8");
            VmReclaimer.Stats st = r.reclaimNow();
            assertEquals(List.of("0:" + 12 * M, 16 * M + ":" + 4 * M), punched, "on demand, whatever the threshold");
            assertEquals(0, st.bytesPending());
            assertEquals(16 * M, st.bytesPunched());
        }
    }

    @Test
    void aBadVersionEndsTheSessionAndTooManyErrorsToo() throws Exception {
        try (VmReclaimer r = reclaimer(new WriteTracker(WriteTracker.newEpoch()), 0.0)) {
            AgentSession s = new AgentSession(r);
            assertEquals("ERROR unsupported version 2", s.handle("HELLO vmfuse-agent 2"));
            assertTrue(s.closed());
            AgentSession noisy = new AgentSession(r);
            for (int i = 0; i < AgentSession.MAX_ERRORS; i++) {
                noisy.handle("garbage");
            }
            assertTrue(noisy.closed());
        }
    }

    @Test
    void overARealSocketLongLinesAreRefusedAndTheSessionGoesOn() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        Path sock = dir.resolve("vm1.agent");
        try (VmReclaimer r = reclaimer(t, 0.0); AgentListener l = AgentListener.start(sock, r, "vm1");
                SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            c.connect(UnixDomainSocketAddress.of(sock));
            PrintStream out = new PrintStream(Channels.newOutputStream(c), true);
            BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(c)));
            out.print("HELLO vmfuse-agent 1\n");
            assertEquals("HELLO vmfuse 1 0", in.readLine());
            out.print("X".repeat(10_000) + "\nFENCE\n");
            assertTrue(in.readLine().startsWith("ERROR line longer than 4096"));
            assertTrue(in.readLine().startsWith("FENCE "));
        }
    }

    /**
     * A guest that sends the same ranges in notice after notice (the fence merges them, so its
     * bound never moves) is answered busy once its waiting notices hold MAX_HELD_RANGES ranges
     * between them: a review found every such notice logged and held, without bound.
     */
    @Test
    void noticesRepeatingTheSameRangesAreRefusedBusyPastTheBound() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        StringBuilder ranges = new StringBuilder();
        for (int i = 0; i < Notice.MAX_RANGES; i++) {
            ranges.append(i == 0 ? "" : ",").append((long) i * 8192).append(':').append(4096);
        }
        try (VmReclaimer r = reclaimer(t, 1.0)) { // a disk with room: nothing is carried out
            AgentSession s = new AgentSession(r);
            s.handle("HELLO vmfuse-agent 1");
            long token = Long.parseLong(s.handle("FENCE").substring(6));
            int acked = 0;
            String answer = "";
            for (int seq = 1; seq <= VmReclaimer.MAX_HELD_RANGES / Notice.MAX_RANGES + 10; seq++) {
                answer = s.handle("NOTICE " + seq + " " + token + " 0 " + ranges);
                if (!answer.startsWith("ACK")) {
                    break;
                }
                acked++;
            }
            assertTrue(answer.startsWith("REFUSED ") && answer.endsWith(" busy"), answer);
            assertEquals(VmReclaimer.MAX_HELD_RANGES / Notice.MAX_RANGES, acked);
        }
    }

    /**
     * An agent socket path is taken from nobody: a file there (an image's path given by mistake)
     * stays as it was, and so does a socket another listener serves (two stores given one path);
     * a review found the file replaced by the socket.
     */
    @Test
    void anAgentSocketPathHoldingAFileOrALiveSocketIsRefusedAndKept() throws Exception {
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        Path image = Files.write(dir.resolve("vm1.raw"), new byte[] {1, 2, 3});
        Path sock = dir.resolve("vm1.agent");
        try (VmReclaimer r = reclaimer(t, 0.0)) {
            IOException onFile = assertThrows(IOException.class, () -> AgentListener.start(image, r, "vm1"));
            assertTrue(onFile.getMessage().contains("not a socket"), onFile.getMessage());
            assertArrayEquals(new byte[] {1, 2, 3}, Files.readAllBytes(image));
            try (AgentListener first = AgentListener.start(sock, r, "vm1")) {
                IOException live = assertThrows(IOException.class, () -> AgentListener.start(sock, r, "vm2"));
                assertTrue(live.getMessage().contains("in use"), live.getMessage());
                try (SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX)) {
                    c.connect(UnixDomainSocketAddress.of(sock)); // the first listener still has it
                    PrintStream out = new PrintStream(Channels.newOutputStream(c), true);
                    BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(c)));
                    out.print("HELLO vmfuse-agent 1\n");
                    assertEquals("HELLO vmfuse 1 0", in.readLine());
                }
            }
            AgentListener.start(sock, r, "vm1").close(); // its socket is stale now, and replaced
        }
    }

    /**
     * The daemon is killed with SIGKILL right after it acknowledged notices below the threshold;
     * the next start finds them in the log, pending again, and carries them out.
     */
    @Test
    void anAcknowledgedNoticeSurvivesAKillOfTheDaemon() throws Exception {
        Path logFile = dir.resolve("vm1.notices");
        Process child = new ProcessBuilder(ProcessHandle.current().info().command().orElse("java"), "-cp",
                System.getProperty("java.class.path"), Child.class.getName(), logFile.toString())
                .redirectErrorStream(true).start();
        try (BufferedReader in = new BufferedReader(new InputStreamReader(child.getInputStream()))) {
            String line;
            List<String> acks = new ArrayList<>();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (System.nanoTime() < deadline && (line = in.readLine()) != null && !line.equals("written")) {
                if (line.startsWith("ACK")) {
                    acks.add(line);
                }
            }
            assertEquals(List.of("ACK 1", "ACK 2", "ACK 3"), acks);
        } finally {
            child.destroyForcibly();
            assertTrue(child.waitFor(30, TimeUnit.SECONDS));
        }
        WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
        try (VmReclaimer r = reclaimer(t, 0.0)) { // restarted with a low threshold: carried out at once
            r.awaitIdle();
            assertEquals(List.of("0:" + M, 4 * M + ":" + 4096), punched, "what a write reused is not punched");
            assertEquals(0, r.stats().bytesPending());
            AgentSession s = new AgentSession(r);
            s.handle("HELLO vmfuse-agent 1");
            assertEquals("ACK 3", s.handle("NOTICE 3 1 1 0:4096"), "what is in the log is acknowledged again");
        }
    }

    /** Acknowledges three notices (the third cut whole by a write) with a threshold never reached, then waits. */
    public static final class Child {
        public static void main(String[] args) throws Exception {
            WriteTracker t = new WriteTracker(WriteTracker.newEpoch());
            ThresholdPolicy never = new ThresholdPolicy(1000, 1000);
            VmReclaimer r = VmReclaimer.open("vm1", "vm1.raw", () -> DISK, new RawFence(t, (o, l) -> l), never,
                    Path.of(args[0]));
            AgentSession s = new AgentSession(r);
            s.handle("HELLO vmfuse-agent 1");
            long token = Long.parseLong(s.handle("FENCE").substring(6));
            System.out.println(s.handle("NOTICE 1 " + token + " 0 0:" + M));
            System.out.println(s.handle("NOTICE 2 " + token + " 0 " + 4 * M + ":8192"));
            t.beginWrite(4 * M + 4096, 4096); // the guest reuses a block of notice 2
            t.endWrite();
            System.out.println(s.handle("NOTICE 3 " + token + " 0 " + 8 * M + ":4096"));
            t.beginWrite(8 * M, 4096);
            t.endWrite();
            System.out.println("written");
            System.out.flush();
            Thread.sleep(60_000);
        }
    }
}
