package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * guest-tools/vmfuse-agent run on the host, as it runs in a guest: ext4 on a loop device over an
 * image in the mount (every write of it reaches the daemon, as a guest's through QEMU), the agent
 * watching a directory of it, its port a pty bridged to the VM's agent socket (virtio-serial's
 * part). Faster than a guest, and the same agent.
 */
@Tag("integration")
class AgentOnHostTest {
    static final long K = 4096;

    /** A pty for the agent's port, relayed to the agent socket (reconnecting after a hang-up, as QEMU's chardev). */
    private static final String BRIDGE = String.join("\n",
            "import os, pty, tty, socket, sys, select, time",
            "master, slave = pty.openpty()",
            "tty.setraw(slave)",
            "print(os.ttyname(slave), flush=True)",
            "while True:",
            "    s = socket.socket(socket.AF_UNIX)",
            "    s.connect(sys.argv[1])",
            "    while True:",
            "        r, _, _ = select.select([master, s], [], [])",
            "        if master in r:",
            "            s.sendall(os.read(master, 65536))",
            "        if s in r:",
            "            d = s.recv(65536)",
            "            if not d:",
            "                break",
            "            os.write(master, d)",
            "    s.close()",
            "    time.sleep(0.2)");

    /**
     * A deleted file of 150 extents: more ranges than a notice's line can hold (4096 bytes). The
     * agent sends them in notices of at most 96 ranges; the host acknowledges each and punches
     * them all. Before, the one notice was a line too long: the host answered ERROR and hung up,
     * and the agent sent it again every round, for ever, with every notice queued behind it.
     */
    @Test
    void aDeletedFileOfManyExtentsReachesTheHostInNoticesThatFit() throws Exception {
        try (Mounted m = Mounted.onTmpfs("400m")) {
            Path img = m.image("vm.raw");
            Proc.ok("truncate", "-s", "128M", img.toString());
            Proc.ok("mkfs.ext4", "-q", "-b", "4096", "-E", "nodiscard", img.toString());
            String loop = Proc.ok("losetup", "-f", "--show", img.toString()).out().trim();
            Path guestFs = Files.createDirectories(m.root.resolve("guestfs"));
            Proc.ok("mount", "-o", "nodiscard", loop, guestFs.toString());
            Path sock = m.root.resolve("vm.agent");
            try {
                m.vmfuse("vm", "add", "vm", "--image", "vm.raw", "--agent-socket", sock.toString(), m.mnt.toString())
                        .assertOk();
                Path data = Files.createDirectories(guestFs.resolve("data"));
                Path state = guestFs.resolve(".agent");
                try (Proc.Background bridge = Proc.start("python3", "-c", BRIDGE, sock.toString())) {
                    Poll.until(() -> bridge.output().startsWith("/dev/pts/"), () -> "the pty: " + bridge.output());
                    String pty = bridge.output().lines().findFirst().orElseThrow();
                    try (Proc.Background agent = Proc.start("timeout", "300", "busybox", "sh", // the guest's shell
                            Mounted.REPO.resolve("guest-tools/vmfuse-agent").toString(), "--watch", data.toString(),
                            "--state", state.toString(), "--port", pty)) {
                        Poll.until(() -> Files.exists(state.resolve("ready")), agent::output);
                        // 300 blocks written, then every other one punched: 150 extents
                        Path file = data.resolve("fragmented");
                        Proc.ok("dd", "if=/dev/urandom", "of=" + file, "bs=4k", "count=300", "conv=fsync", "status=none");
                        for (int i = 1; i < 300; i += 2) {
                            Proc.ok("fallocate", "-p", "-o", String.valueOf(i * K), "-l", String.valueOf(K), file.toString());
                        }
                        Poll.until(() -> extents(file) == 150 && indexedRanges(state) == 150,
                                () -> "indexed with 150 extents: " + extents(file) + "\n" + agent.output());
                        Proc.ok("rm", file.toString());
                        Proc.ok("sync");
                        Poll.until(() -> indexed(state) == 0 && queued(state) == 0 && m.log().contains("notice seq=2"),
                                () -> "every notice acknowledged\n" + agent.output() + Proc.tail(m.log()), 120);
                        assertTrue(agent.output().contains("96 ranges sent now, the rest as notice 2"), agent.output());
                        assertTrue(!agent.output().contains("host said"), agent.output());
                    }
                }
                m.vmfuse("vm", "reclaim", "vm", m.mnt.toString()).assertOk();
                // all of the file's 150 blocks but those the guest's filesystem gave again meanwhile (to
                // the agent's own state files on it): GETFSMAP no longer shows them free, so they are left out
                Poll.until(() -> punched(m) >= 140 * K, () -> punched(m) + " bytes punched\n" + Proc.tail(m.log()));
                assertTrue(punched(m) <= 150 * K, punched(m) + " bytes punched");
            } finally {
                Proc.run("umount", guestFs.toString());
                Proc.run("losetup", "-d", loop);
            }
            assertEquals(0, Proc.run("e2fsck", "-fn", img.toString()).exit(), "the guest's filesystem is clean");
        }
    }

    /**
     * The host end of the agent's port where the host cannot fence at first (a qcow2 image's QEMU
     * that cannot make its bitmap: "ERROR no fence: ..."), then can: it logs each request.
     */
    private static final String HOST_THAT_CANNOT_FENCE_AT_FIRST = String.join("\n",
            "import os, socket, sys",
            "path, log = sys.argv[1], sys.argv[2]",
            "srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(1)",
            "fences = 0",
            "while True:",
            "    c, _ = srv.accept(); f = c.makefile('rw')",
            "    for line in f:",
            "        line = line.strip()",
            "        with open(log, 'a') as l: l.write(line + '\\n')",
            "        w = line.split(' ')",
            "        if w[0] == 'HELLO': f.write('HELLO vmfuse 1 0\\n')",
            "        elif w[0] == 'FENCE':",
            "            fences += 1",
            "            f.write('ERROR no fence: QMP block-dirty-bitmap-add: GenericError: no such node\\n' if fences == 1 else 'FENCE 77\\n')",
            "        elif w[0] == 'NOTICE': f.write('ACK ' + w[1] + '\\n')",
            "        else: f.write('ERROR what\\n')",
            "        f.flush()");

    /**
     * A host that cannot fence answers FENCE with an error: the agent keeps its notice and sends it
     * in a later round, with a token. Before, it sent the error's words as the token: the host
     * refused the notice as malformed, and the agent dropped it (seen with libvirt's -blockdev
     * disks, whose drive QemuFence did not find by name).
     */
    @Test
    void anAgentKeepsItsNoticeWhenTheHostCannotFenceAndSendsItLater() throws Exception {
        Path dir = Files.createTempDirectory(Path.of("/tmp"), "vmfuse-agent-");
        Path sock = dir.resolve("host.sock");
        Path requests = dir.resolve("requests.log");
        // the guest's filesystem: ext4 of its own (GETFSMAP), where nothing else takes the freed blocks
        Path img = dir.resolve("guest.img");
        Proc.ok("truncate", "-s", "64M", img.toString());
        Proc.ok("mkfs.ext4", "-q", "-b", "4096", "-E", "nodiscard", img.toString());
        String loop = Proc.ok("losetup", "-f", "--show", img.toString()).out().trim();
        Path guestFs = Files.createDirectories(dir.resolve("guestfs"));
        Proc.ok("mount", "-o", "nodiscard", loop, guestFs.toString());
        Path data = Files.createDirectories(guestFs.resolve("data"));
        Path state = guestFs.resolve(".agent");
        try (Proc.Background host = Proc.start("python3", "-c", HOST_THAT_CANNOT_FENCE_AT_FIRST, sock.toString(),
                requests.toString())) {
            Poll.until(() -> Files.exists(sock), host::output);
            try (Proc.Background bridge = Proc.start("python3", "-c", BRIDGE, sock.toString())) {
                Poll.until(() -> bridge.output().startsWith("/dev/pts/"), () -> "the pty: " + bridge.output());
                String pty = bridge.output().lines().findFirst().orElseThrow();
                try (Proc.Background agent = Proc.start("timeout", "120", "busybox", "sh",
                        Mounted.REPO.resolve("guest-tools/vmfuse-agent").toString(), "--watch", data.toString(),
                        "--state", state.toString(), "--port", pty)) {
                    Poll.until(() -> Files.exists(state.resolve("ready")), agent::output);
                    Proc.ok("dd", "if=/dev/urandom", "of=" + data.resolve("f"), "bs=4k", "count=8", "conv=fsync",
                            "status=none");
                    Poll.until(() -> indexed(state) == 1, agent::output);
                    Proc.ok("rm", data.resolve("f").toString());
                    Poll.until(() -> read(requests).contains("NOTICE 1 77 "), () -> agent.output() + read(requests), 60);
                    Poll.until(() -> queued(state) == 0, agent::output);
                    assertTrue(agent.output().contains("no fence token, host said 'ERROR no fence: "), agent.output());
                    List<String> notices = read(requests).lines().filter(l -> l.startsWith("NOTICE")).toList();
                    assertEquals(1, notices.size(), read(requests));
                    assertEquals(5, notices.get(0).split(" ").length, notices.get(0)); // NOTICE seq token size ranges
                }
            }
        } finally {
            Proc.run("umount", guestFs.toString());
            Proc.run("losetup", "-d", loop);
            Proc.run("rm", "-rf", dir.toString());
        }
    }

    private static String read(Path p) {
        try {
            return Files.exists(p) ? Files.readString(p) : "";
        } catch (java.io.IOException e) {
            return "";
        }
    }

    /** The file's extents, as the agent reads them (filefrag -v: one line each). */
    private static long extents(Path file) {
        return Proc.ok("filefrag", "-v", file.toString()).out().lines().filter(l -> l.matches("\\s*\\d+:.*")).count();
    }

    /** Bytes the daemon's log says it punched for the guest's notices. */
    private static long punched(Mounted m) {
        return java.util.regex.Pattern.compile("punched seq=\\d+ bytes=(\\d+)").matcher(m.log()).results()
                .mapToLong(x -> Long.parseLong(x.group(1))).sum();
    }

    private static long count(Path dir) {
        try (Stream<Path> s = Files.list(dir)) {
            return s.count();
        } catch (java.io.IOException e) {
            return -1;
        }
    }

    private static long indexed(Path state) {
        return count(state.resolve("index"));
    }

    /** Ranges in the agent's one index entry (0 if there is none yet). */
    private static long indexedRanges(Path state) {
        try (Stream<Path> s = Files.list(state.resolve("index"))) {
            List<Path> entries = s.filter(p -> !p.toString().endsWith(".tmp")).toList();
            if (entries.size() != 1) {
                return 0;
            }
            String[] f = Files.readString(entries.get(0)).trim().split(" ");
            return f.length == 2 ? f[1].split(",").length : 0;
        } catch (java.io.IOException e) {
            return 0;
        }
    }

    private static long queued(Path state) {
        return count(state.resolve("queue"));
    }
}
