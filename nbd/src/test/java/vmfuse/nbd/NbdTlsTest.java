package vmfuse.nbd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * NBD over TCP with TLS and pre-shared keys, required: QEMU's client (tls-creds-psk) and libnbd's
 * (nbds:// with tls-psk-file) against the server, each identity seeing its own exports; a wrong
 * key, an unknown identity and a client without TLS get nothing.
 */
@Tag("integration")
class NbdTlsTest {
    private static final int MIB = 1 << 20;
    private static final String ALICE_KEY = "0123456789abcdef0123456789abcdef";
    private static final String BOB_KEY = "fedcba9876543210fedcba9876543210";

    @TempDir
    Path dir;
    private final MemoryExport disk = new MemoryExport(16 * MIB);
    private final MemoryExport other = new MemoryExport(4 * MIB);
    private final Scheduler scheduler = new Scheduler(2);
    private NbdServer server;
    private int port;

    /** alice sees "disk", bob "other"; nothing is seen without an identity. */
    private Exports byIdentity() {
        Map<String, Map<String, MemoryExport>> of = Map.of("alice", Map.of("disk", disk), "bob",
                Map.of("other", other));
        return new Exports() {
            private Map<String, MemoryExport> mine(Peer peer) {
                return peer.tlsIdentity() == null ? Map.of() : of.getOrDefault(peer.tlsIdentity(), Map.of());
            }

            @Override
            public List<String> names(Peer peer) {
                return List.copyOf(mine(peer).keySet());
            }

            @Override
            public Export open(Peer peer, String name) {
                MemoryExport e = mine(peer).get(name);
                return e == null ? null : e.open();
            }
        };
    }

    private Path keys(String name, String... lines) throws Exception {
        Path d = Files.createDirectories(dir.resolve(name));
        Path f = d.resolve("keys.psk"); // the name QEMU's tls-creds-psk looks for in its dir
        Files.write(f, List.of(lines));
        Files.setPosixFilePermissions(f, PosixFilePermissions.fromString("rw-------"));
        return f;
    }

    @BeforeEach
    void listen() throws Exception {
        TlsPsk psk = TlsPsk.load(keys("server", "alice:" + ALICE_KEY, "bob:" + BOB_KEY));
        server = NbdServer.listen(List.of(new NbdServer.Tcp(new InetSocketAddress("127.0.0.1", 0), psk)),
                byIdentity(), NbdServer.Limits.of(8), scheduler);
        port = server.tcpAddress().getPort();
    }

    @AfterEach
    void close() {
        server.close();
        scheduler.close();
    }

    private String nbds(String user, Path keys, String export) {
        return "nbds://" + user + "@127.0.0.1:" + port + "/" + export + "?tls-psk-file=" + keys;
    }

    private List<String> qemu(String tool, Path keys, String user, String export, String... args) {
        List<String> cmd = new java.util.ArrayList<>(List.of(tool));
        cmd.addAll(List.of(args));
        cmd.addAll(List.of("--object", "tls-creds-psk,id=tls0,endpoint=client,dir=" + keys.getParent()
                + ",username=" + user, "--image-opts", "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port="
                + port + ",export=" + export + ",tls-creds=tls0"));
        return cmd;
    }

    @Test
    void qemuAndLibnbdSpeakTlsWithTheirKeysAndEachIdentitySeesItsOwn() throws Exception {
        Path alice = keys("alice", "alice:" + ALICE_KEY);
        Path bob = keys("bob", "bob:" + BOB_KEY);
        String list = NbdServerTest.run("nbdinfo", "--list", "--json", nbds("alice", alice, "")).ok().out();
        assertTrue(list.contains("\"export-name\": \"disk\"") && !list.contains("\"other\""), list);
        String bobs = NbdServerTest.run("nbdinfo", "--list", "--json", nbds("bob", bob, "")).ok().out();
        assertTrue(bobs.contains("\"export-name\": \"other\"") && !bobs.contains("\"disk\""), bobs);

        NbdServerTest.run(qemu("qemu-io", alice, "alice", "disk", "-c", "write -P 0x5c 1M 2M", "-c", "flush")
                .toArray(String[]::new)).ok();
        byte[] expect = new byte[2 * MIB];
        Arrays.fill(expect, (byte) 0x5c);
        assertArrayEquals(expect, Arrays.copyOfRange(disk.disk, MIB, 3 * MIB));
        String info = NbdServerTest.run(qemu("qemu-img", alice, "alice", "disk", "info").toArray(String[]::new))
                .ok().out();
        assertTrue(info.contains("virtual size: 16 MiB"), info);
        NbdServerTest.run(qemu("qemu-io", alice, "alice", "disk", "-r", "-c", "read -P 0x5c 1M 2M")
                .toArray(String[]::new)).ok();
        NbdServerTest.Result crossed = NbdServerTest.run(qemu("qemu-io", bob, "bob", "disk", "-c", "read 0 4k")
                .toArray(String[]::new));
        assertTrue(crossed.exit() != 0, "bob opened alice's export: " + crossed.out());
    }

    @Test
    void aWrongKeyAnUnknownIdentityAndAClientWithoutTlsGetNothing() throws Exception {
        Path wrong = keys("wrong", "alice:" + BOB_KEY);
        Path stranger = keys("stranger", "carol:" + ALICE_KEY);
        for (String[] cmd : new String[][] {
            {"nbdinfo", "--list", nbds("alice", wrong, "")},
            {"nbdinfo", "--list", nbds("carol", stranger, "")},
            {"nbdinfo", "--list", "nbd://127.0.0.1:" + port + "/"},
            {"nbdinfo", "nbd://127.0.0.1:" + port + "/disk"}}) {
            NbdServerTest.Result r = NbdServerTest.run(cmd);
            assertTrue(r.exit() != 0, String.join(" ", cmd) + " got in:\n" + r.out());
            assertTrue(!r.out().contains("\"disk\"") && !r.out().contains("export=disk"), r.out());
        }
        NbdServerTest.Result wrongQemu = NbdServerTest.run(qemu("qemu-img", wrong, "alice", "disk", "info")
                .toArray(String[]::new));
        assertTrue(wrongQemu.exit() != 0, wrongQemu.out());
        for (int i = 0; i < 100 && server.clients() > 0; i++) {
            Thread.sleep(50);
        }
        assertEquals(0, server.clients(), "every refused client was hung up on");
        assertEquals(0, disk.opens.get(), "nothing was opened");
    }

    /**
     * Before TLS a client is nobody: after 4 options without STARTTLS it is hung up on, and one
     * host holds at most 4 connections that have not proven a key (a fifth is closed at once);
     * once they go, a client with a key gets in.
     */
    @Test
    void clientsWithoutAKeyAreBoundedBeforeTheyProveOne() throws Exception {
        String script = String.join("\n",
                "import socket, struct, sys, time",
                "def conn():",
                "    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=20)",
                "    s.recv(18, socket.MSG_WAITALL); s.sendall(struct.pack('>I', 3)); return s",
                "def closed(s):",
                "    try:",
                "        return s.recv(1) == b''",
                "    except (ConnectionResetError, socket.timeout):",
                "        return False",
                "s = conn()",
                "for i in range(5):",
                "    s.sendall(b'IHAVEOPT' + struct.pack('>II', 3, 0))",
                "replies = 0",
                "try:",
                "    while True:",
                "        h = s.recv(20, socket.MSG_WAITALL)",
                "        if len(h) < 20: break",
                "        magic, o, t, n = struct.unpack('>QIII', h); s.recv(n, socket.MSG_WAITALL); replies += 1",
                "except ConnectionResetError: pass",
                "print('tls-reqd', replies)",
                "idle = [conn() for _ in range(4)]",
                "time.sleep(0.5)",
                "fifth = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=20)",
                "print('fifth-closed', fifth.recv(18) == b'')",
                "for c in idle: c.close()");
        String out = NbdServerTest.run("python3", "-c", script, String.valueOf(port)).ok().out();
        assertTrue(out.contains("tls-reqd 4"), "4 options answered ERR_TLS_REQD, then hung up: " + out);
        assertTrue(out.contains("fifth-closed True"), out);
        for (int i = 0; i < 100 && server.clients() > 0; i++) {
            Thread.sleep(50);
        }
        Path alice = keys("alice2", "alice:" + ALICE_KEY);
        NbdServerTest.run("nbdinfo", "--list", nbds("alice", alice, "")).ok();
    }
}
