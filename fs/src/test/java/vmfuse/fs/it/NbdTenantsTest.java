package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Tenants of the NBD door (vmfuse export add/set/remove): clients run as other users (nobody,
 * daemon, bin, through runuser), each seeing and opening only its own exports' volumes; the
 * scheduler's limit and weights between two of them, measured by fio's nbd engine; status counting
 * each export's requests; the exports kept across a remount.
 */
@Tag("integration")
class NbdTenantsTest {
    static final String NOBODY = "nobody"; // uid 65534
    static final String DAEMON = "daemon"; // uid 1
    static final String BIN = "bin"; // uid 2, given nothing

    Path socketDir;
    Path socket;
    Mounted m;

    @BeforeEach
    void mount() throws Exception {
        socketDir = Files.createTempDirectory(Path.of("/tmp"), "vmfuse-tenants-");
        Files.setPosixFilePermissions(socketDir, PosixFilePermissions.fromString("rwxr-xr-x")); // others reach it
        socket = socketDir.resolve("nbd.sock");
        // two workers: two clients with 8 requests in flight each always find requests waiting in the
        // scheduler, where its order is decided (tmpfs is faster than two cores can ask)
        m = Mounted.onTmpfs("512m", "--nbd", "unix:" + socket, "--io-workers", "2");
    }

    @AfterEach
    void unmount() throws Exception {
        m.close();
        Proc.run("rm", "-rf", socketDir.toString());
    }

    private String uri(String export) {
        return "nbd+unix:///" + export + "?socket=" + socket;
    }

    private Proc.Result as(String user, String... cmd) {
        List<String> c = new ArrayList<>(List.of("runuser", "-u", user, "--"));
        c.addAll(List.of(cmd));
        return Proc.run(Duration.ofSeconds(120), c);
    }

    private Set<String> listAs(String user) throws Exception {
        Proc.Result r = user == null ? Proc.ok("nbdinfo", "--list", "--json", uri(""))
                : as(user, "nbdinfo", "--list", "--json", uri(""));
        assertEquals(0, r.exit(), r.describe());
        Set<String> names = new TreeSet<>();
        for (JsonNode e : new ObjectMapper().readTree(r.out()).path("exports")) {
            names.add(e.path("export-name").asText());
        }
        return names;
    }

    private void image(String name, String size) throws Exception {
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image(name).toString(), size);
    }

    @Test
    void eachUserSeesAndOpensOnlyItsOwnExportsAndTheyOutliveARemount() throws Exception {
        Files.createDirectories(m.image("t1"));
        image("t1/a.raw", "16M");
        image("b.raw", "16M");
        image("c.raw", "16M");
        m.vmfuse("journal", "create", "--size", "8M", "j1", m.mnt.toString()).assertOk();
        m.vmfuse("export", "add", "t1", "--uid", "65534", "--image", "images/t1/a.raw", "--journal", "journals/j1",
                m.mnt.toString()).assertOk();
        m.vmfuse("export", "add", "t2", "--uid", "1", "--image", "b.raw", m.mnt.toString()).assertOk();

        assertEquals(Set.of("images/t1/a.raw", "journals/j1"), listAs(NOBODY));
        assertEquals(Set.of("images/b.raw"), listAs(DAEMON));
        Proc.Result none = as(BIN, "nbdinfo", "--list", uri(""));
        assertTrue(none.exit() != 0, "a user given nothing is hung up on: " + none.describe());
        m.awaitLog("(bin) refused: its user has no export here");
        assertEquals(Set.of("images/t1/a.raw", "images/b.raw", "images/c.raw", "journals/j1"), listAs(null),
                "root sees every volume");

        Proc.Result w = as(NOBODY, "qemu-io", "-f", "raw", "-c", "write -P 0x41 0 1M", uri("images/t1/a.raw"));
        assertEquals(0, w.exit(), w.describe());
        Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 0x41 0 1M", m.image("t1/a.raw").toString());
        Proc.Result j = as(NOBODY, "qemu-io", "-f", "raw", "-c", "write -P 0x42 0 64k", "-c", "flush",
                uri("journals/j1"));
        assertEquals(0, j.exit(), j.describe());
        for (String[] refused : new String[][] {{NOBODY, "images/b.raw"}, {NOBODY, "images/c.raw"},
            {DAEMON, "images/t1/a.raw"}, {BIN, "images/b.raw"}}) {
            Proc.Result r = as(refused[0], "qemu-io", "-f", "raw", "-c", "write -P 0x66 0 4k", uri(refused[1]));
            assertTrue(r.exit() != 0, refused[0] + " opened " + refused[1] + ": " + r.describe());
            assertTrue(refused[0].equals(BIN) || r.err().contains("not available") || r.err().contains("unknown")
                    || r.err().contains("No such"), "refused as an export that is not there: " + r.describe());
        }
        Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 0 0 16M", m.image("b.raw").toString()); // nothing written
        Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 0 0 16M", m.image("c.raw").toString());

        Proc.Result taken = m.vmfuse("export", "add", "t3", "--uid", "2", "--image", "images/t1/a.raw",
                m.mnt.toString());
        assertTrue(taken.exit() != 0 && taken.err().contains("images/t1/a.raw is export t1's"), taken.describe());
        Proc.Result missing = m.vmfuse("export", "add", "t3", "--uid", "2", "--image", "nope.raw", m.mnt.toString());
        assertTrue(missing.exit() != 0 && missing.err().contains("no image images/nope.raw"), missing.describe());
        Proc.Result badWeight = m.vmfuse("export", "set", "t2", "--weight", "0", m.mnt.toString());
        assertTrue(badWeight.exit() != 0 && badWeight.err().contains("weight 0"), badWeight.describe());

        m.umount().assertOk();
        m.mount("--nbd", "unix:" + socket);
        assertEquals(Set.of("images/t1/a.raw", "journals/j1"), listAs(NOBODY), "kept in the store across a remount");
        Proc.Background connected = Proc.start("runuser", "-u", NOBODY, "--", "python3", "-c", String.join("\n",
                "import socket, struct, sys",
                "s = socket.socket(socket.AF_UNIX); s.settimeout(60); s.connect(sys.argv[1]); s.recv(18, socket.MSG_WAITALL)",
                "s.sendall(struct.pack('>I', 3)); name = b'images/t1/a.raw'",
                "s.sendall(b'IHAVEOPT' + struct.pack('>III', 7, 4 + len(name) + 2, len(name)) + name + struct.pack('>H', 0))",
                "while True:",
                "    magic, o, t, n = struct.unpack('>QIII', s.recv(20, socket.MSG_WAITALL))",
                "    if n: s.recv(n, socket.MSG_WAITALL)",
                "    if t == 1: break",
                "print('open', flush=True)",
                "print('hung-up' if s.recv(1) == b'' else 'data', flush=True)"), socket.toString());
        try {
            Poll.until(() -> connected.output().contains("open"), connected::output);
            m.vmfuse("export", "remove", "t1", m.mnt.toString()).assertOk();
            Poll.until(() -> connected.output().contains("hung-up"), connected::output);
        } finally {
            connected.close();
        }
        m.awaitLog("export=images/t1/a.raw hung up on: it is no longer this client's");
        assertTrue(as(NOBODY, "nbdinfo", "--list", uri("")).exit() != 0, "removed: its user is hung up on");
        assertEquals(Set.of("images/b.raw"), listAs(DAEMON));
        m.awaitLog("export remove export=t1");
    }

    /** fio's nbd engine as a user: {"iops": ..., "bw_bytes": ...} of its one job's reads or writes. */
    private Proc.Result fioAs(String user, String export, String rw, String bs, int depth, int seconds) {
        return as(user, "fio", "--name=t", "--ioengine=nbd", "--uri=" + uri(export), "--rw=" + rw, "--bs=" + bs,
                "--iodepth=" + depth, "--time_based", "--ramp_time=1", "--runtime=" + seconds, "--output-format=json");
    }

    private static JsonNode side(Proc.Result fio, String side) throws Exception {
        assertEquals(0, fio.exit(), fio.describe());
        String out = fio.out();
        return new ObjectMapper().readTree(out.substring(out.indexOf('{'))).path("jobs").get(0).path(side);
    }

    @Test
    void aLimitHoldsAndStatusCountsEachExport() throws Exception {
        image("a.raw", "64M");
        image("b.raw", "64M");
        m.vmfuse("export", "add", "ta", "--uid", "65534", "--image", "a.raw", "--weight", "3", m.mnt.toString())
                .assertOk();
        m.vmfuse("export", "add", "tb", "--uid", "1", "--image", "b.raw", "--limit-iops", "200", m.mnt.toString())
                .assertOk();

        double limited = side(fioAs(DAEMON, "images/b.raw", "randread", "4k", 4, 5), "read").path("iops").asDouble();
        System.out.printf("a limit of 200 IOPS: %.1f IOPS%n", limited);
        assertTrue(limited >= 180 && limited <= 220, "a limit of 200 IOPS holds within 10%: " + limited);
        Proc.Result set = m.vmfuse("export", "set", "tb", "--limit-iops", "0", m.mnt.toString());
        assertTrue(set.ok() && set.out().contains("limit none"), set.describe());
        double free = side(fioAs(DAEMON, "images/b.raw", "randread", "4k", 4, 2), "read").path("iops").asDouble();
        assertTrue(free > 2 * limited, "set while running: the limit is gone: " + free + " IOPS");
        Proc.Result w = as(NOBODY, "qemu-io", "-f", "raw", "-c", "write -P 1 0 8M", uri("images/a.raw"));
        assertEquals(0, w.exit(), w.describe());

        String json = m.vmfuse("status", "--json", m.mnt.toString()).assertOk().out();
        JsonNode st = new ObjectMapper().readTree(json);
        assertEquals(2, st.path("exports").size(), json);
        JsonNode ta = null;
        for (JsonNode n : st.path("nbd")) {
            if (n.path("name").asText().equals("ta")) {
                ta = n;
            }
        }
        assertTrue(ta != null && ta.path("bytesWritten").asLong() > 0 && ta.path("p99Micros").asLong() > 0, json);
        assertFalse(json.contains("\"name\" : \"images/a.raw\""), "a's requests are counted in its export: " + json);
    }

    /**
     * Weights on a disk slow to read (nbdkit's delay filter, 2 ms a read, under nbdfuse, a loop
     * device and ext4): two tenants read at random, 8 requests in flight each, the scheduler's two
     * workers the only way to the disk; weights 3:1 split the reads 3:1.
     */
    @Test
    void weightsSplitASlowDiskBetweenTwoTenants() throws Exception {
        m.close();
        m = Mounted.prepare();
        try (NbdDisk disk = NbdDisk.create(m.store, "512M", "2ms")) {
            m.mount("--nbd", "unix:" + socket, "--io-workers", "2");
            for (String name : List.of("a.raw", "b.raw")) { // data on the disk, not in the page cache
                Proc.ok("dd", "if=/dev/urandom", "of=" + m.backing(name), "bs=1M", "count=128", "conv=fsync",
                        "status=none");
            }
            Proc.ok("sh", "-c", "echo 3 > /proc/sys/vm/drop_caches");
            m.vmfuse("export", "add", "ta", "--uid", "65534", "--image", "a.raw", "--weight", "3", m.mnt.toString())
                    .assertOk();
            m.vmfuse("export", "add", "tb", "--uid", "1", "--image", "b.raw", m.mnt.toString()).assertOk();
            CompletableFuture<Proc.Result> a = CompletableFuture.supplyAsync(
                    () -> fioAs(NOBODY, "images/a.raw", "randread", "4k", 8, 6));
            Proc.Result b = fioAs(DAEMON, "images/b.raw", "randread", "4k", 8, 6);
            double iopsA = side(a.get(150, TimeUnit.SECONDS), "read").path("iops").asDouble();
            double iopsB = side(b, "read").path("iops").asDouble();
            double ratio = iopsA / iopsB;
            System.out.printf("weights 3:1 on a slow disk: %.0f IOPS against %.0f, %.2f:1%n", iopsA, iopsB, ratio);
            assertTrue(ratio >= 2.7 && ratio <= 3.3, "weights 3:1 split the disk's reads 3:1 within 10%: " + iopsA
                    + " IOPS against " + iopsB + ", " + ratio);
            m.umount().assertOk();
        }
    }

    private static Path keys(Path dir, String... lines) throws Exception {
        Files.createDirectories(dir);
        Path f = dir.resolve("keys.psk"); // QEMU's tls-creds-psk reads DIR/keys.psk
        Files.write(f, List.of(lines));
        Files.setPosixFilePermissions(f, PosixFilePermissions.fromString("rw-------"));
        return f;
    }

    /**
     * NBD over TCP: TLS with pre-shared keys required; a client sees the exports of the key
     * identity it proved (QEMU's tls-creds-psk writing an image with qemu-img convert, libnbd's
     * nbds:// listing); a wrong key and a client without TLS get nothing; an export for both a uid
     * and an identity is reached both ways.
     */
    @Test
    void overTcpTlsIsRequiredAndEachKeyIdentitySeesItsOwn() throws Exception {
        String alice = "alice:00112233445566778899aabbccddeeff";
        String bob = "bob:ffeeddccbbaa99887766554433221100";
        Path serverKeys = keys(socketDir.resolve("server"), alice, bob);
        Path aliceKeys = keys(socketDir.resolve("alice"), alice);
        Path wrongKeys = keys(socketDir.resolve("wrong"), "alice:ffeeddccbbaa99887766554433221100");
        int port;
        try (java.net.ServerSocket free = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            port = free.getLocalPort();
        }
        m.umount().assertOk();
        m.mount("--nbd", "unix:" + socket, "--nbd", "tcp:127.0.0.1:" + port, "--tls-psk", serverKeys.toString(),
                "--io-workers", "2");
        image("t1.raw", "16M");
        image("t2.raw", "16M");
        m.vmfuse("export", "add", "a", "--psk-identity", "alice", "--image", "t1.raw", m.mnt.toString()).assertOk();
        m.vmfuse("export", "add", "b", "--psk-identity", "bob", "--uid", "65534", "--image", "t2.raw",
                m.mnt.toString()).assertOk();

        String nbds = "nbds://alice@127.0.0.1:" + port + "/?tls-psk-file=" + aliceKeys;
        String list = Proc.ok("nbdinfo", "--list", "--json", nbds).out();
        assertTrue(list.contains("\"export-name\": \"images/t1.raw\"") && !list.contains("t2.raw"), list);

        Path src = m.root.resolve("src.raw");
        Proc.ok("dd", "if=/dev/urandom", "of=" + src, "bs=1M", "count=8", "status=none");
        Proc.ok("qemu-img", "convert", "-n", "-f", "raw", src.toString(), "--object",
                "tls-creds-psk,id=tls0,endpoint=client,dir=" + aliceKeys.getParent() + ",username=alice",
                "--target-image-opts", "driver=raw,file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,"
                        + "file.server.port=" + port + ",file.export=images/t1.raw,file.tls-creds=tls0");
        Proc.ok("qemu-img", "compare", "-f", "raw", "-F", "raw", src.toString(), m.image("t1.raw").toString());

        Proc.Result crossed = Proc.run("nbdinfo", "nbds://alice@127.0.0.1:" + port + "/images/t2.raw?tls-psk-file="
                + aliceKeys);
        assertTrue(crossed.exit() != 0, "alice opened bob's image: " + crossed.describe());
        Proc.Result wrong = Proc.run("nbdinfo", "--list", "nbds://alice@127.0.0.1:" + port + "/?tls-psk-file="
                + wrongKeys);
        assertTrue(wrong.exit() != 0, "a wrong key got in: " + wrong.describe());
        Proc.Result plain = Proc.run("nbdinfo", "nbd://127.0.0.1:" + port + "/images/t1.raw");
        assertTrue(plain.exit() != 0, "a client without TLS got in: " + plain.describe());
        assertEquals(Set.of("images/t2.raw"), listAs(NOBODY), "export b is reached over the unix socket by its uid");
        m.awaitLog("TLS handshake failed: bad_record_mac");
        String status = m.vmfuse("status", m.mnt.toString()).assertOk().out();
        assertTrue(status.lines().anyMatch(l -> l.matches("a\\s+-\\s+alice\\s.*images/t1.raw")), status);
    }
}
