package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

import vmfuse.reclaimer.Qmp;

/**
 * The reclaimer through a real mount: `vmfuse vm add`, an agent speaking the protocol on the VM's
 * socket (this test plays the guest's side), the fence against the guest's writes, hostile
 * notices, `vmfuse status`.
 */
@Tag("integration")
class ReclaimerTest {
    static final long M = 1 << 20;

    /** The guest's end of the agent socket. */
    static final class Agent implements AutoCloseable {
        final SocketChannel c;
        final PrintStream out;
        final BufferedReader in;

        Agent(Path socket) throws Exception {
            c = SocketChannel.open(StandardProtocolFamily.UNIX);
            c.connect(UnixDomainSocketAddress.of(socket));
            out = new PrintStream(Channels.newOutputStream(c), true);
            in = new BufferedReader(new InputStreamReader(Channels.newInputStream(c)));
            assertTrue(ask("HELLO vmfuse-agent 1").startsWith("HELLO vmfuse 1 "));
        }

        String ask(String line) throws Exception {
            out.print(line + "\n");
            out.flush();
            return in.readLine();
        }

        long fence() throws Exception {
            String a = ask("FENCE");
            assertTrue(a.startsWith("FENCE "), a);
            return Long.parseLong(a.substring(6));
        }

        @Override
        public void close() throws Exception {
            c.close();
        }
    }

    private static void dd(Path img, long offsetMiB, long countMiB, String src) {
        Proc.ok("dd", "if=" + src, "of=" + img, "bs=1M", "seek=" + offsetMiB, "count=" + countMiB, "conv=notrunc,fsync",
                "status=none");
    }

    private static String sha(Path img, long offset, long length) {
        return Proc.ok("sh", "-c", "dd if=" + img + " bs=4096 skip=" + offset / 4096 + " count=" + length / 4096
                + " status=none | sha256sum").out().split(" ")[0];
    }


    @Test
    void deletedRangesArePunchedAndWhatTheGuestWroteAfterTheFenceIsNot() throws Exception {
        try (Mounted m = Mounted.onTmpfs("320m")) {
            Path img = m.image("vm1.raw");
            Proc.ok("truncate", "-s", "80M", img.toString());
            dd(img, 0, 80, "/dev/urandom");
            Path sock = m.root.resolve("vm1.agent");
            m.vmfuse("vm", "add", "vm1", "--image", "images/vm1.raw", "--agent-socket", sock.toString(),
                    m.mnt.toString()).assertOk();
            long before = Disk.allocated(m.backing("vm1.raw"));
            try (Agent a = new Agent(sock)) {
                long token = a.fence();
                dd(img, 40, 1, "/dev/urandom"); // the guest reuses a block of the file it deleted, after the fence
                String reused = sha(img, 40 * M, M);
                String kept = sha(img, 72 * M, 8 * M);
                // the file: 64 MiB from 8 MiB, reported with a ragged start and end
                assertEquals("ACK 1", a.ask("NOTICE 1 " + token + " " + 64 * M + " " + (8 * M - 100) + ":" + (64 * M + 200)));
                Poll.until(() -> before - Disk.allocated(m.backing("vm1.raw")) >= 63 * M - 200_000,
                        () -> "allocation drops by the 63 MiB not rewritten: " + before + " -> "
                                + Disk.allocated(m.backing("vm1.raw")) + "\n" + m.log());
                assertEquals(reused, sha(img, 40 * M, M), "the block written after the fence is intact");
                assertEquals(kept, sha(img, 72 * M, 8 * M));
                assertEquals(sha(Path.of("/dev/zero"), 0, M), sha(img, 20 * M, M), "a punched range reads as zeros");

                // a hostile guest: out of its disk, a stale token, garbage
                assertEquals("REFUSED 2 out-of-range", a.ask("NOTICE 2 " + a.fence() + " 1 " + 79 * M + ":" + 2 * M));
                assertEquals("REFUSED 3 stale-fence", a.ask("NOTICE 3 42 1 0:4096"));
                assertTrue(a.ask("NOTICE; rm -rf /").startsWith("ERROR"));
                assertEquals(kept, sha(img, 72 * M, 8 * M));
            }
            String status = m.vmfuse("status", m.mnt.toString()).assertOk().out();
            assertTrue(status.lines().anyMatch(l -> l.matches("vm1 +vm1\\.raw +1 +[3-9] +0 +6\\d{7} +6\\d{7} +.*")), status);
            m.awaitLog("reclaim vm=vm1 image=vm1.raw punched seq=1");
            m.awaitLog("reason=out-of-range");

            Proc.Result mv = Proc.run("mv", img.toString(), m.image("other.raw").toString());
            assertTrue(!mv.ok() && mv.err().contains("busy"), mv.describe());
            m.vmfuse("vm", "remove", "vm1", m.mnt.toString()).assertOk();
            assertTrue(!Files.exists(sock));
        }
    }

    /**
     * A hostile guest reports ranges it still uses, and ranges of a disk it does not have: it can
     * only hurt its own image; the other VM's image is untouched.
     */
    @Test
    void aHostileGuestHurtsOnlyItsOwnImage() throws Exception {
        try (Mounted m = Mounted.onTmpfs("320m")) {
            Path evil = m.image("evil.raw");
            Path good = m.image("good.raw");
            for (Path p : new Path[] {evil, good}) {
                Proc.ok("truncate", "-s", "32M", p.toString());
                dd(p, 0, 32, "/dev/urandom");
            }
            String goodSum = sha(good, 0, 32 * M);
            Path evilSock = m.root.resolve("evil.agent");
            m.vmfuse("vm", "add", "evil", "--image", "evil.raw", "--agent-socket", evilSock.toString(), m.mnt.toString())
                    .assertOk();
            m.vmfuse("vm", "add", "good", "--image", "good.raw", "--agent-socket", m.root.resolve("good.agent").toString(),
                    m.mnt.toString()).assertOk();
            try (Agent a = new Agent(evilSock)) {
                long token = a.fence();
                // everything it has, live data included; then past its disk, where the other image would be
                assertEquals("ACK 1", a.ask("NOTICE 1 " + token + " 0 0:" + 32 * M));
                assertEquals("REFUSED 2 out-of-range", a.ask("NOTICE 2 " + token + " 0 " + 32 * M + ":" + 32 * M));
            }
            Poll.until(() -> Disk.allocated(m.backing("evil.raw")) < M, () -> "evil.raw punched\n" + m.log());
            assertEquals(sha(Path.of("/dev/zero"), 0, 32 * M), sha(evil, 0, 32 * M), "its own data: gone, by its own doing");
            assertEquals(goodSum, sha(good, 0, 32 * M), "the other VM's image is untouched");
            assertTrue(Disk.allocated(m.backing("good.raw")) >= 32 * M);
        }
    }

    @Test
    void aNoticeWaitingBelowTheThresholdIsCutByAWriteAndSurvivesACleanRestart() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path img = m.image("vm2.raw");
            Proc.ok("truncate", "-s", "1G", img.toString());
            dd(img, 0, 16, "/dev/urandom");
            Path sock = m.root.resolve("vm2.agent");
            m.vmfuse("vm", "add", "vm2", "--image", "vm2.raw", "--agent-socket", sock.toString(), m.mnt.toString())
                    .assertOk();
            try (Agent a = new Agent(sock)) {
                // 8 MiB of a 1 GiB disk: below any threshold the host disk's free fraction gives
                assertEquals("ACK 1", a.ask("NOTICE 1 " + a.fence() + " 0 0:" + 8 * M));
            }
            dd(img, 2, 1, "/dev/urandom"); // the guest reuses 1 MiB of it while the notice waits
            String reused = sha(img, 2 * M, M);
            m.umount().assertOk(); // records that the image was watched up to here, as it is now
            m.mount();
            m.awaitLog("reclaim vm=vm2 image=vm2.raw restored pending=" + 7 * M);
            assertEquals(reused, sha(img, 2 * M, M));
            m.vmfuse("vm", "remove", "vm2", m.mnt.toString()).assertOk();
            m.awaitLog("vm remove vm=vm2 dropped_pending=" + 7 * M);
            assertTrue(!Files.exists(m.store.resolve("reclaim/vm2.notices")), "unwatched, its notices are dropped");
            Proc.Result bad = m.vmfuse("vm", "add", "vm3", "--image", "nothere.raw", "--agent-socket",
                    m.root.resolve("x.agent").toString(), m.mnt.toString());
            assertEquals(1, bad.exit(), bad.describe());
            assertTrue(bad.err().contains("no image nothere.raw"), bad.describe());
            Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", m.image("q.qcow2").toString(), "64M");
            Proc.Result q = m.vmfuse("vm", "add", "vm4", "--image", "q.qcow2", "--agent-socket",
                    m.root.resolve("q.agent").toString(), m.mnt.toString());
            assertTrue(q.err().contains("is qcow2"), q.describe());
        }
    }

    private static String hmp(Path qmp, String command) throws Exception {
        try (Qmp q = Qmp.connect(qmp)) {
            return q.hmp(command);
        }
    }

    /**
     * VM NAME registered with a new qcow2 image NAME.qcow2 of {@code size} (its first 16 MiB
     * written), agent socket ROOT/NAME.agent and QMP socket ROOT/NAME.qmp. Returns the image.
     */
    private static Path qcow2Vm(Mounted m, String name, String size) {
        Path img = m.image(name + ".qcow2");
        Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), size);
        Proc.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 16m", img.toString());
        m.vmfuse("vm", "add", name, "--image", name + ".qcow2", "--agent-socket", m.root.resolve(name + ".agent")
                .toString(), "--qmp-socket", m.root.resolve(name + ".qmp").toString(), m.mnt.toString()).assertOk();
        return img;
    }

    /** A QEMU (stopped at start, -S) with {@code img} as drive d0, its QMP socket up. */
    private static Proc.Background qemuOf(Path img, Path qmp) {
        Proc.Background qemu = Proc.start("qemu-system-x86_64", "-S", "-accel", "tcg", "-nodefaults",
                "-display", "none", "-qmp", "unix:" + qmp + ",server=on,wait=off",
                "-drive", "file=" + img + ",format=qcow2,if=none,id=d0,discard=unmap");
        Poll.until(() -> Files.exists(qmp), () -> "QEMU's QMP socket\n" + qemu.output());
        return qemu;
    }

    /**
     * A qcow2 VM's notice waits below the threshold; its QEMU quits (storing the fence bitmap in
     * the image). `vmfuse vm reclaim` then punches the image itself, held closed: not while a
     * process has it open, never what the guest wrote after the token.
     */
    @Test
    void aQcow2ImageNoQemuRunsIsReclaimedFromItsOwnMetadataOnDemand() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path img = qcow2Vm(m, "vm5", "4G");
            Path sock = m.root.resolve("vm5.agent");
            Path qmp = m.root.resolve("vm5.qmp");
            try (Proc.Background qemu = qemuOf(img, qmp)) {
                try (Agent a = new Agent(sock)) {
                    long token = a.fence();
                    String w = hmp(qmp, "qemu-io d0 \"write -P 0x33 1M 1M\""); // the guest reuses 1 MiB, after the token
                    assertTrue(!w.contains("rror") && !w.contains("failed"), w);
                    // 8 MiB of a 4 GiB disk: below any threshold the host disk's free fraction gives
                    assertEquals("ACK 1", a.ask("NOTICE 1 " + token + " " + 8 * M + " 0:" + 8 * M));
                }
                try (Qmp q = Qmp.connect(qmp)) {
                    q.execute("quit", null);
                }
                assertTrue(qemu.process.waitFor(30, java.util.concurrent.TimeUnit.SECONDS), qemu.output());
            }
            try (Proc.Background holder = Proc.start("sh", "-c", "exec 3<" + img + " && echo open && exec sleep 60")) {
                Poll.until(() -> holder.output().contains("open"), () -> "the holder opens the image: " + holder.output());
                Proc.Result busy = m.vmfuse("vm", "reclaim", "vm5", m.mnt.toString());
                assertEquals(1, busy.exit(), busy.describe());
                assertTrue(busy.err().contains("has the image open"), busy.describe());
            }
            String done = m.vmfuse("vm", "reclaim", "vm5", m.mnt.toString()).assertOk().out();
            assertTrue(done.contains("punched " + 7 * M + " bytes"), done + m.log());
            assertTrue(done.contains(" 0 bytes still waiting"), done);
            Proc.Result check = Proc.run("qemu-img", "check", img.toString());
            assertEquals(0, check.exit(), check.describe());
            Proc.Result read = Proc.ok("qemu-io", "-f", "qcow2", "-c", "read -P 0 0 1m", "-c", "read -P 0x33 1m 1m",
                    "-c", "read -P 0 2m 6m", "-c", "read -P 0x11 8m 8m", img.toString());
            assertTrue(!read.out().contains("failed"), read.out());
            assertTrue(!Proc.ok("qemu-img", "info", img.toString()).out().contains("vmfuse-fence-"), "bitmap removed");
            m.awaitLog("offline");
            String status = m.vmfuse("status", m.mnt.toString()).assertOk().out();
            assertTrue(status.lines().anyMatch(l -> l.matches("vm5 +vm5\\.qcow2 +1 +0 +0 +" + 7 * M + " +\\d+ +0 +" + M + " +0 +0 +.*")), status);
        }
    }

    /**
     * vm reclaim shows how much it carried out on a terminal (a pty, as script(1) gives one), and
     * nothing when its stderr is a pipe: a script reads only its result.
     */
    @Test
    void vmReclaimShowsProgressOnATerminalOnly() throws Exception {
        try (Mounted m = Mounted.onTmpfs("200m")) {
            Path img = m.image("vp.raw");
            Proc.ok("truncate", "-s", "8G", img.toString()); // 16 MiB waiting of 8 GiB: below the threshold
            dd(img, 0, 32, "/dev/urandom");
            Path sock = m.root.resolve("vp.agent");
            m.vmfuse("vm", "add", "vp", "--image", "vp.raw", "--agent-socket", sock.toString(), m.mnt.toString())
                    .assertOk();
            try (Agent a = new Agent(sock)) {
                long token = a.fence();
                for (int i = 0; i < 16; i++) {
                    assertEquals("ACK " + (i + 1), a.ask("NOTICE " + (i + 1) + " " + token + " " + M + " " + i * M + ":" + M));
                }
            }
            Proc.Result piped = m.vmfuse("vm", "reclaim", "vp", m.mnt.toString()).assertOk();
            assertTrue(piped.out().contains("punched " + 16 * M + " bytes"), piped.describe());
            assertEquals("", piped.err(), "no progress in a pipe");
            try (Agent a = new Agent(sock)) {
                long token = a.fence();
                for (int i = 16; i < 32; i++) {
                    assertEquals("ACK " + (i + 1), a.ask("NOTICE " + (i + 1) + " " + token + " " + M + " " + i * M + ":" + M));
                }
            }
            Proc.Result tty = Proc.run(Duration.ofSeconds(60), "script", "-qec",
                    Mounted.VMFUSE + " vm reclaim vp " + m.mnt, "/dev/null");
            assertEquals(0, tty.exit(), tty.describe());
            assertTrue(tty.out().contains("vm vp: carried out 16.0 of 16.0 MiB"), tty.describe());
            assertTrue(tty.out().contains("punched " + 16 * M + " bytes"), tty.describe());
        }
    }

    /**
     * A qcow2 disk set up as libvirt does (-blockdev nodes, a device with an id, no drive name):
     * the fence is a bitmap on the format node, the discards go through the guest device's own
     * backend (qemu-io -d QDEV). A carry-out that fails after it stopped the bitmap (here: its NBD
     * socket's place, beside the QMP socket where QEMU may write, taken by a directory) lets the
     * bitmap record again, so the next try punches; before, the notice was then dropped as
     * unfenced.
     */
    @Test
    void aQcow2CarryOutOnABlockdevDiskThatFailsKeepsItsFenceAndPunchesLater() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path img = qcow2Vm(m, "vm7", "4G");
            Path sock = m.root.resolve("vm7.agent");
            Path qmp = m.root.resolve("vm7.qmp");
            try (Proc.Background qemu = Proc.start("qemu-system-x86_64", "-S", "-accel", "tcg", "-nodefaults",
                    "-display", "none", "-qmp", "unix:" + qmp + ",server=on,wait=off",
                    "-blockdev", "{\"driver\":\"file\",\"filename\":\"" + img + "\",\"node-name\":\"libvirt-1-storage\"}",
                    "-blockdev", "{\"node-name\":\"libvirt-1-format\",\"driver\":\"qcow2\",\"file\":\"libvirt-1-storage\","
                            + "\"discard\":\"unmap\"}",
                    "-device", "virtio-blk-pci,drive=libvirt-1-format,id=virtio-disk0")) {
                Poll.until(() -> Files.exists(qmp), () -> "QEMU's QMP socket\n" + qemu.output());
                Path taken = qmp.resolveSibling("vm7.qmp.nbd");
                Files.createDirectories(taken.resolve("x"));
                try (Agent a = new Agent(sock)) {
                    long token = a.fence();
                    assertEquals("ACK 1", a.ask("NOTICE 1 " + token + " " + 8 * M + " 0:" + 8 * M));
                }
                Proc.Result failed = m.vmfuse("vm", "reclaim", "vm7", m.mnt.toString());
                assertEquals(1, failed.exit(), failed.describe());
                Files.delete(taken.resolve("x"));
                Files.delete(taken);
                String done = m.vmfuse("vm", "reclaim", "vm7", m.mnt.toString()).assertOk().out();
                assertTrue(done.contains("punched " + 8 * M + " bytes"), done + m.log());
                assertTrue(!m.log().contains("no longer records writes"), m.log());
                try (Qmp q = Qmp.connect(qmp)) {
                    q.execute("quit", null);
                }
                assertTrue(qemu.process.waitFor(30, java.util.concurrent.TimeUnit.SECONDS), qemu.output());
            }
            Proc.Result check = Proc.run("qemu-img", "check", img.toString());
            assertEquals(0, check.exit(), check.describe());
            Proc.Result read = Proc.ok("qemu-io", "-f", "qcow2", "-c", "read -P 0 0 8m", "-c", "read -P 0x11 8m 8m",
                    img.toString());
            assertTrue(!read.out().contains("failed"), read.out());
        }
    }

    /**
     * FAULTS.md R3 through the daemon: a qcow2 VM's notice waits, its QEMU quits, and the image is
     * then edited so that the guest's first cluster points at the image's own L2 table. `vmfuse
     * vm reclaim` punches nothing, says the notice was dropped, and the log names the overlap:
     * the file is byte for byte what it was.
     */
    @Test
    void aCraftedQcow2ThatPointsDataAtItsL2TableIsRefused() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path img = qcow2Vm(m, "vm6", "1G");
            Path sock = m.root.resolve("vm6.agent");
            Path qmp = m.root.resolve("vm6.qmp");
            try (Proc.Background qemu = qemuOf(img, qmp)) {
                try (Agent a = new Agent(sock)) {
                    assertEquals("ACK 1", a.ask("NOTICE 1 " + a.fence() + " " + 8 * M + " 0:" + 8 * M));
                }
                try (Qmp q = Qmp.connect(qmp)) {
                    q.execute("quit", null);
                }
                assertTrue(qemu.process.waitFor(30, java.util.concurrent.TimeUnit.SECONDS), qemu.output());
            }
            // guest cluster 0's L2 entry (COPIED) pointed at the L2 table that holds it
            try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(m.backing("vm6.qcow2"),
                    java.nio.file.StandardOpenOption.READ, java.nio.file.StandardOpenOption.WRITE)) {
                java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(8);
                ch.read(b, 40);
                long l1 = b.flip().getLong();
                ch.read(b.clear(), l1);
                long l2 = b.flip().getLong() & 0x00ff_ffff_ffff_fe00L;
                ch.write(java.nio.ByteBuffer.allocate(8).putLong(0, (1L << 63) | l2), l2);
                ch.force(true);
            }
            String before = Disk.sha256(m.backing("vm6.qcow2"));
            long allocated = Disk.allocated(m.backing("vm6.qcow2"));

            Proc.Result r = m.vmfuse("vm", "reclaim", "vm6", m.mnt.toString()).assertOk();
            assertTrue(r.out().contains("punched 0 bytes, freed 0 bytes, 0 bytes still waiting"), r.describe());
            assertTrue(r.err().contains("notices of " + 8 * M + " bytes dropped, never punched"), r.describe());
            assertEquals(before, Disk.sha256(m.backing("vm6.qcow2")), "nothing punched or written");
            assertEquals(allocated, Disk.allocated(m.backing("vm6.qcow2")));
            // the daemon's log is written in batches: the line may come a moment after the answer
            m.awaitLog("overlaps the L2 table of L1 entry 0; the image is corrupt");
        }
    }

    /** A raw VM with 8 MiB noticed as deleted, below the threshold: it waits. Returns the image. */
    private static Path vmWithAWaitingNotice(Mounted m, Path sock) throws Exception {
        Path img = m.image("vm.raw");
        Proc.ok("truncate", "-s", "1G", img.toString());
        dd(img, 0, 16, "/dev/urandom");
        m.vmfuse("vm", "add", "vm", "--image", "vm.raw", "--agent-socket", sock.toString(), m.mnt.toString())
                .assertOk();
        try (Agent a = new Agent(sock)) {
            assertEquals("ACK 1", a.ask("NOTICE 1 " + a.fence() + " 0 0:" + 8 * M));
        }
        return img;
    }

    /** Carries out what waits for vm, and returns its output; nothing may have been punched. */
    private static void reclaimPunchesNothing(Mounted m) {
        Proc.Result r = m.vmfuse("vm", "reclaim", "vm", m.mnt.toString()).assertOk();
        assertTrue(r.out().contains("punched 0 bytes"), r.describe());
    }

    @Test
    void aNoticeRestoredAfterTheDaemonWasKilledIsDroppedNeverPunched() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path img = vmWithAWaitingNotice(m, m.root.resolve("vm.agent"));
            m.daemonPid().flatMap(ProcessHandle::of).ifPresent(Proc::kill); // kill -9: no clean stop recorded
            Proc.run("fusermount", "-u", "-z", m.mnt.toString());
            dd(m.backing("vm.raw"), 0, 8, "/dev/urandom"); // meanwhile, on the store: nobody watches
            String live = sha(m.backing("vm.raw"), 0, 8 * M);
            m.mount("--force");
            m.awaitLog("reclaim vm=vm image=vm.raw dropped 1 notice(s) of " + 8 * M);
            reclaimPunchesNothing(m);
            assertEquals(live, sha(img, 0, 8 * M), "what was written while nobody watched is there");
            String status = m.vmfuse("status", m.mnt.toString()).assertOk().out();
            String row = status.lines().filter(l -> l.startsWith("vm ") && l.contains(" vm.raw ")).findFirst()
                    .orElseThrow(() -> new AssertionError(status));
            assertEquals(String.valueOf(8 * M), row.trim().split("\\s+")[10], "DROPPED:\n" + status);
        }
    }

    @Test
    void aNoticeForAnImageRestoredWhileUnwatchedIsNeverPunched() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path img = vmWithAWaitingNotice(m, m.root.resolve("vm.agent"));
            Path backup = m.root.resolve("backup.raw");
            Proc.ok("cp", "--sparse=always", m.backing("vm.raw").toString(), backup.toString());
            m.umount().assertOk(); // a clean stop: watched up to here
            Proc.ok("cp", "--sparse=always", backup.toString(), m.backing("vm.raw").toString()); // restored in the store
            String restored = sha(backup, 0, 8 * M);
            m.mount();
            m.awaitLog("reclaim vm=vm image=vm.raw dropped 1 notice(s)");
            reclaimPunchesNothing(m);
            assertEquals(restored, sha(img, 0, 8 * M), "the restored image is whole");
        }
    }

    @Test
    void aVmThatFailedToStartStaysRegisteredSaysWhyAndItsNoticesAreNeverPunched() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path sockDir = Files.createDirectories(m.root.resolve("agents"));
            Path img = vmWithAWaitingNotice(m, sockDir.resolve("vm.agent"));
            m.umount().assertOk();
            Proc.ok("rm", "-rf", sockDir.toString());
            Files.writeString(sockDir, "not a directory"); // the socket's directory is unusable at the next mount
            Files.writeString(m.store.resolve("vms.tsv"), "a line of six\tfields\tnobody\tunderstands\there\tnow\n",
                    java.nio.file.StandardOpenOption.APPEND); // kept by every save, never dropped (found by a review)
            m.mount();
            String status = m.vmfuse("status", m.mnt.toString()).assertOk().out();
            assertTrue(status.contains("vm vm (vm.raw) is registered but not served: "), status);
            // its image is still its own: a second VM on it would share one count of its writes
            Proc.Result twin = m.vmfuse("vm", "add", "twin", "--image", "vm.raw", "--agent-socket",
                    m.root.resolve("twin.agent").toString(), m.mnt.toString());
            assertFalse(twin.ok(), twin.describe());
            assertTrue(twin.err().contains("image vm.raw is vm vm's"), twin.describe());
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("other.raw").toString(), "4M");
            m.vmfuse("vm", "add", "other", "--image", "other.raw", "--agent-socket",
                    m.root.resolve("other.agent").toString(), m.mnt.toString()).assertOk();
            assertTrue(Files.readString(m.store.resolve("vms.tsv")).startsWith("other\t")
                    || Files.readString(m.store.resolve("vms.tsv")).contains("\nvm\tvm.raw\t"),
                    "a save keeps the VM that could not start");
            assertTrue(Files.readString(m.store.resolve("vms.tsv")).contains("vm\tvm.raw\t"));
            assertTrue(Files.readString(m.store.resolve("vms.tsv")).contains(
                    "a line of six\tfields\tnobody\tunderstands\there\tnow\n"), "a line not understood is kept");
            dd(img, 0, 8, "/dev/urandom"); // the VM runs anyway: its writes are not watched
            String live = sha(img, 0, 8 * M);
            m.umount().assertOk();
            Files.delete(sockDir);
            m.mount();
            m.awaitLog("reclaim vm=vm image=vm.raw dropped 1 notice(s)");
            reclaimPunchesNothing(m);
            assertEquals(live, sha(img, 0, 8 * M), "what it wrote unwatched is there");
        }
    }
}
