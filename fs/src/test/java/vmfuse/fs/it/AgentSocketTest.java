package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * FAULTS.md R5, issue 14: a VM is known by the socket its agent's bytes arrive on, so only its
 * QEMU (or root) may connect. Before, the socket had the umask's mode and any local user who could
 * connect could report that VM's live data as deleted.
 */
@Tag("integration")
class AgentSocketTest {
    /** Connects to {@code sock} as {@code user} and greets: the answer, "EACCES", or "closed" if the daemon hung up. */
    private static String greetAs(String user, Path sock) {
        List<String> cmd = new ArrayList<>();
        if (!user.equals("root")) {
            cmd.addAll(List.of("runuser", "-u", user, "--"));
        }
        cmd.addAll(List.of("python3", "-c", String.join("\n",
                "import socket, sys",
                "s = socket.socket(socket.AF_UNIX)",
                "s.settimeout(10)",
                "try:",
                "    s.connect(sys.argv[1])",
                "except PermissionError:",
                "    print('EACCES'); sys.exit(0)",
                "try:",
                "    s.sendall(b'HELLO vmfuse-agent 1\\n')",
                "    line = s.makefile().readline()",
                "except (BrokenPipeError, ConnectionResetError):",
                "    line = ''",
                "print(line.strip() if line else 'closed')"), sock.toString()));
        return Proc.run(java.time.Duration.ofSeconds(30), cmd).assertOk().out().trim();
    }

    private static String modeAndOwner(Path p) {
        return Proc.ok("stat", "-c", "%a %U", p.toString()).out().trim();
    }

    @Test
    void anAgentSocketIsItsQemuUsersAloneAndAnyOtherPeerIsRefused() throws Exception {
        Path agents = Files.createTempDirectory(Path.of("/tmp"), "vmfuse-agents-");
        Files.setPosixFilePermissions(agents, PosixFilePermissions.fromString("rwxr-xr-x")); // others may reach it
        try (Mounted m = Mounted.create()) {
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("vm1.raw").toString(), "4M");
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("vm2.raw").toString(), "4M");
            Path s1 = agents.resolve("vm1.agent");
            m.vmfuse("vm", "add", "vm1", "--image", "images/vm1.raw", "--agent-socket", s1.toString(),
                    m.mnt.toString()).assertOk();
            assertEquals("600 root", modeAndOwner(s1), "root's QEMU by default");
            assertTrue(greetAs("root", s1).startsWith("HELLO vmfuse 1"), "root speaks for the VM");
            assertEquals("EACCES", greetAs("nobody", s1), "another user cannot even connect");

            Files.setPosixFilePermissions(s1, PosixFilePermissions.fromString("rw-rw-rw-")); // loosened by mistake
            assertEquals("closed", greetAs("nobody", s1), "the peer's credentials are checked all the same");
            m.awaitLog("agent connection vm=vm1 socket=" + s1 + " refused: the peer runs as nobody");

            Path s2 = agents.resolve("vm2.agent");
            m.vmfuse("vm", "add", "vm2", "--image", "images/vm2.raw", "--agent-socket", s2.toString(),
                    "--agent-user", "nobody", m.mnt.toString()).assertOk();
            assertEquals("600 nobody", modeAndOwner(s2));
            assertTrue(greetAs("nobody", s2).startsWith("HELLO vmfuse 1"), "the VM's QEMU user speaks for it");
            assertTrue(Files.readString(m.store.resolve("vms.tsv")).contains("\tnobody\n"), "registered as nobody's");

            m.umount().assertOk();
            m.mount(); // the registry brings it back with its access
            assertEquals("600 nobody", modeAndOwner(s2));
            assertTrue(greetAs("nobody", s2).startsWith("HELLO vmfuse 1"));
        } finally {
            Proc.run("rm", "-rf", agents.toString());
        }
    }
}
