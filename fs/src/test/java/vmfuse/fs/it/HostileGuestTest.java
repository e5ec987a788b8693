package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Issue 14: two VMs on one daemon, one of them hostile. Its agent (running as its QEMU's user)
 * takes 200,000 fence tokens, floods notices of 96 ranges each (disjoint, overlapping, or past
 * the disk), and tries the other VM's socket; its guest scatters 4 KiB writes over its disk under the tokens.
 * The other VM's notice is carried out and its I/O goes on, and the daemon's heap, measured after
 * a full GC, grows by what the per-VM bounds allow, not by what the hostile guest sends.
 */
@Tag("integration")
class HostileGuestTest {
    static final long M = 1 << 20;
    static final int RANGES = 1024; // --reclaim-max-ranges

    /** The hostile agent: pipelined, as fast as the socket takes it; prints the answers it got, by kind. */
    private static final String HOSTILE = String.join("\n",
            "import socket, sys, threading, collections",
            "sock, tokens, notices, disk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])",
            "s = socket.socket(socket.AF_UNIX)",
            "s.connect(sock)",
            "r = s.makefile('rb')",
            "got = collections.Counter()",
            "last = []",
            "def read(n):",
            "    for _ in range(n):",
            "        line = r.readline().decode().split()",
            "        if not line: got['closed'] += 1; return",
            "        got[' '.join(line[:1] + line[2:3])] += 1",
            "        if line[0] == 'FENCE': last[:] = [line[1]]",
            "s.sendall(b'HELLO vmfuse-agent 1\\n')",
            "seq = int(r.readline().split()[3])",
            "t = threading.Thread(target=read, args=(tokens,)); t.start()",
            "batch = b'FENCE\\n' * 1000",
            "for _ in range(tokens // 1000): s.sendall(batch)",
            "t.join()",
            "token = last[0]",
            "t = threading.Thread(target=read, args=(notices,)); t.start()",
            "for i in range(notices):",
            "    seq += 1",
            "    if i % 3 == 0:  # 96 disjoint 4 KiB ranges: what waits grows",
            "        ranges = ['%d:4096' % ((i * 96 + j) * 8192 % disk) for j in range(96)]",
            "    elif i % 3 == 1:  # 96 overlapping ranges of 1 MiB",
            "        ranges = ['%d:%d' % (j * 4096, 1 << 20) for j in range(96)]",
            "    else:  # 96 huge ones, past the disk",
            "        ranges = ['%d:%d' % (j * 4096, disk * 4) for j in range(96)]",
            "    s.sendall(('NOTICE %d %s %d %s\\n' % (seq, token, 1 << 30, ','.join(ranges))).encode())",
            "t.join()",
            "print(dict(got))");

    @Test
    void aHostileGuestCostsTheOtherVmNothingAndTheHeapStaysWithinItsBound() throws Exception {
        try (Mounted m = Mounted.onTmpfs("1400m", "--reclaim-max-ranges", String.valueOf(RANGES))) {
            Path good = m.image("good.raw");
            Proc.ok("truncate", "-s", "256M", good.toString());
            Proc.ok("dd", "if=/dev/urandom", "of=" + good, "bs=1M", "count=96", "conv=notrunc,fsync", "status=none");
            Path evil = m.image("evil.raw");
            Proc.ok("truncate", "-s", "1G", evil.toString());
            Path goodSock = m.root.resolve("good.agent");
            Path evilSock = m.root.resolve("evil.agent");
            m.vmfuse("vm", "add", "good", "--image", "good.raw", "--agent-socket", goodSock.toString(),
                    m.mnt.toString()).assertOk();
            m.vmfuse("vm", "add", "evil", "--image", "evil.raw", "--agent-socket", evilSock.toString(),
                    "--agent-user", "nobody", m.mnt.toString()).assertOk();
            Proc.ok("chmod", "755", m.root.toString()); // nobody reaches the sockets' directory
            long pid = m.daemonPid().orElseThrow();
            long baseline = heapUsed(pid);

            // the hostile guest: scattered writes under its tokens, and its agent
            try (Proc.Background writes = Proc.start("fio", "--name=scatter", "--filename=" + evil,
                    "--rw=randwrite:4096", "--bs=4k", "--size=1G", "--number_ios=300000", "--ioengine=psync",
                    "--randrepeat=1", "--norandommap");
                    Proc.Background agent = Proc.start("runuser", "-u", "nobody", "--", "timeout", "300", "python3",
                            "-c", HOSTILE, evilSock.toString(), "200000", "2000", String.valueOf(1L << 30))) {
                Proc.Result intruder = Proc.run(Duration.ofSeconds(30), List.of("runuser", "-u", "nobody", "--",
                        "python3", "-c", "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n"
                                + "    s.connect(sys.argv[1]); print('connected')\nexcept PermissionError:\n"
                                + "    print('EACCES')", goodSock.toString()));
                assertEquals("EACCES", intruder.out().trim(), "the hostile VM's user cannot reach the other's socket");

                // meanwhile the other VM: a notice of 64 MiB, carried out; its own I/O
                long before = Disk.allocated(m.backing("good.raw"));
                try (ReclaimerTest.Agent a = new ReclaimerTest.Agent(goodSock)) {
                    assertEquals("ACK 1", a.ask("NOTICE 1 " + a.fence() + " " + 64 * M + " " + 16 * M + ":" + 64 * M));
                }
                // carried out by this command, or already by the reclaimer: the hostile VM's writes
                // may have filled the store's disk far enough that the threshold let it go at once
                Proc.Result reclaimed = m.vmfuse("vm", "reclaim", "good", m.mnt.toString()).assertOk();
                assertTrue(reclaimed.out().contains(" 0 bytes still waiting"), reclaimed.describe());
                // the command returns once the punch is done; its log line reaches the file a little later
                m.awaitLog("reclaim vm=good image=good.raw punched seq=1 bytes=" + 64 * M);
                assertTrue(before - Disk.allocated(m.backing("good.raw")) >= 63 * M, "good's 64 MiB freed");
                for (int i = 0; i < 5; i++) {
                    Proc.Result io = Proc.run(Duration.ofSeconds(30), List.of("qemu-io", "-f", "raw",
                            "-c", "write -P " + (i + 1) + " " + 200 * M + " 1m", "-c", "read -P " + (i + 1) + " "
                                    + 200 * M + " 1m", good.toString()));
                    assertTrue(io.ok() && !io.out().contains("failed"), io.describe());
                }

                assertTrue(agent.process.waitFor(300, java.util.concurrent.TimeUnit.SECONDS), agent.output());
                assertEquals(0, agent.process.exitValue(), agent.output() + "\n" + Proc.tail(m.log()));
                assertTrue(writes.process.waitFor(300, java.util.concurrent.TimeUnit.SECONDS), writes.output());
                assertEquals(0, writes.process.exitValue(), writes.output());
                String answers = agent.output();
                assertTrue(answers.contains("'FENCE': 200000"), answers);
                assertTrue(answers.contains("busy"), "past its pending ranges the hostile VM's notices are refused: "
                        + answers);
                assertTrue(!answers.contains("closed"), answers);

                long after = heapUsed(pid);
                System.out.printf("daemon heap after a full GC: %d KiB before the hostile guest, %d KiB after%n",
                        baseline >> 10, after >> 10);
                // each VM's fence state is bounded by RANGES ranges of written and of pending (about
                // 100 bytes each) and 64 tokens: well under a MiB; 16 MiB leaves room for the JVM's own
                assertTrue(after - baseline < 16 * M, "heap grew from " + (baseline >> 10) + " KiB to "
                        + (after >> 10) + " KiB");
            }
            // as a script reads it: good's notice punched whole, evil's refused and dropped nothing of good's
            com.fasterxml.jackson.databind.JsonNode status = new com.fasterxml.jackson.databind.ObjectMapper()
                    .readTree(m.vmfuse("status", "--json", m.mnt.toString()).assertOk().out());
            java.util.Map<String, com.fasterxml.jackson.databind.JsonNode> vms = new java.util.HashMap<>();
            status.get("vms").forEach(v -> vms.put(v.get("name").asText(), v));
            assertEquals(64 * M, vms.get("good").get("punched").asLong(), status.toString());
            assertEquals(1, vms.get("good").get("notices").asLong(), status.toString());
            assertTrue(vms.get("evil").get("refused").asLong() > 0, status.toString());
            assertEquals(0, status.get("failedVms").size(), status.toString());
        }
    }

    /** Bytes of the daemon's heap in use after a full GC (jcmd: the generations' "used"). */
    static long heapUsed(long pid) {
        Proc.ok("jcmd", String.valueOf(pid), "GC.run");
        String info = Proc.ok("jcmd", String.valueOf(pid), "GC.heap_info").out();
        long used = 0;
        for (String line : info.lines().toList()) {
            if (line.contains("generation") && line.contains("used ")) {
                String n = line.substring(line.indexOf("used ") + 5).trim().split("[^0-9]")[0];
                used += Long.parseLong(n) << 10;
            }
        }
        assertTrue(used > 0, info);
        return used;
    }
}
