package vmfuse.nbd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The server against the clients operators use: qemu-io, qemu-img, nbdinfo; and against clients that break the protocol. */
@Tag("integration")
class NbdServerTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;
    private final MemoryExport disk = new MemoryExport(64 * MIB);
    private final MemoryExport other = new MemoryExport(4 * MIB);
    /** Short timeouts, so that the watchdog's hang-ups are seen in a test. */
    private static final NbdServer.Limits LIMITS = new NbdServer.Limits(8, 8, Duration.ofSeconds(2),
            Duration.ofSeconds(2));
    private final Scheduler scheduler = new Scheduler(4);
    private NbdServer server;

    @BeforeEach
    void listen() throws Exception {
        listen(LIMITS);
    }

    private void listen(NbdServer.Limits limits) throws IOException {
        Map<String, MemoryExport> byName = new LinkedHashMap<>();
        byName.put("disk", disk);
        byName.put("other", other);
        server = NbdServer.listen(dir.resolve("nbd.sock"), MemoryExport.serving(byName), limits, scheduler);
    }

    @AfterEach
    void close() {
        server.close();
        scheduler.close();
    }

    private String uri(String export) {
        return "nbd+unix:///" + export + "?socket=" + server.socket();
    }

    /** Runs a client, killed past 60 s; its exit status and output. */
    record Result(int exit, String out) {
        Result ok() {
            assertEquals(0, exit, out);
            return this;
        }
    }

    static Result run(String... cmd) throws Exception {
        Path log = Files.createTempFile("nbd-client", ".log");
        try {
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
            if (!p.waitFor(60, TimeUnit.SECONDS)) {
                p.descendants().forEach(ProcessHandle::destroyForcibly);
                p.destroyForcibly();
                p.waitFor(10, TimeUnit.SECONDS);
                throw new AssertionError("timed out: " + Arrays.toString(cmd));
            }
            return new Result(p.exitValue(), Files.readString(log));
        } finally {
            Files.deleteIfExists(log);
        }
    }

    @Test
    void qemuIoWritesReadsZeroesDiscardsAndFlushes() throws Exception {
        run("qemu-io", "-f", "raw", "-c", "write -P 0x55 0 1M", "-c", "read -P 0x55 0 1M",
                "-c", "write -P 0x66 1M 1M", "-c", "write -z 1M 1M", "-c", "read -P 0 1M 1M",
                "-c", "discard 0 64k", "-c", "flush", "-c", "write -P 0x77 -f 2M 4k",
                "-c", "write -P 0x44 8M 5M", "-c", "read -P 0x44 8M 5M", uri("disk")).ok();
        byte[] expect = new byte[4096];
        Arrays.fill(expect, (byte) 0x55);
        assertArrayEquals(expect, Arrays.copyOfRange(disk.disk, 64 * 1024, 64 * 1024 + 4096));
        assertArrayEquals(new byte[4096], Arrays.copyOfRange(disk.disk, 0, 4096), "discarded");
        assertArrayEquals(new byte[4096], Arrays.copyOfRange(disk.disk, MIB, MIB + 4096), "zeroed");
        assertEquals(1, disk.trims.get());
        assertEquals(1, disk.zeroes.get());
        assertTrue(disk.flushes.get() >= 2, "flush, and the FUA write's: " + disk.flushes.get());
        assertEquals(0, waitForNoClients(), "the connection ended");
        assertEquals(disk.opens.get(), disk.closes.get(), "every open closed at the disconnect");
    }

    @Test
    void nbdinfoListsTheExportsAndMapsHolesAndData() throws Exception {
        String list = run("nbdinfo", "--list", "--json", "nbd+unix:///?socket=" + server.socket()).ok().out();
        assertTrue(list.contains("\"export-name\": \"disk\"") && list.contains("\"export-name\": \"other\""), list);
        assertTrue(list.contains("\"export-size\": " + 64 * MIB), list);

        run("qemu-io", "-f", "raw", "-c", "write -P 1 0 1M", "-c", "write -P 2 8M 1M", uri("disk")).ok();
        String map = run("nbdinfo", "--map", uri("disk")).ok().out();
        List<long[]> rows = new ArrayList<>();
        for (String line : map.strip().split("\n")) {
            String[] f = line.trim().split("\\s+");
            rows.add(new long[] {Long.parseLong(f[0]), Long.parseLong(f[1]), Long.parseLong(f[2])});
        }
        assertEquals(4, rows.size(), map);
        assertArrayEquals(new long[] {0, MIB, 0}, rows.get(0), map);
        assertArrayEquals(new long[] {MIB, 7 * MIB, 3}, rows.get(1), "hole,zero: " + map);
        assertArrayEquals(new long[] {8 * MIB, MIB, 0}, rows.get(2), map);
        assertArrayEquals(new long[] {9 * MIB, 55 * MIB, 3}, rows.get(3), map);
        for (String can : List.of("flush", "fua", "trim", "zero", "fast-zero", "multi-conn", "cache", "df")) {
            assertEquals(0, run("nbdinfo", "--can", can, uri("disk")).exit(), "can " + can);
        }
        assertEquals(2, run("nbdinfo", "--is", "read-only", uri("disk")).exit(), "writable");
    }

    @Test
    void qemuImgConvertsToAndFromAnExportAndComparesThem() throws Exception {
        Path src = dir.resolve("src.raw");
        byte[] b = new byte[4 * MIB];
        new java.util.Random(7).nextBytes(b);
        Arrays.fill(b, MIB, 2 * MIB, (byte) 0);
        Files.write(src, b);
        run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src.toString(), uri("other")).ok();
        assertArrayEquals(b, other.disk);
        run("qemu-img", "compare", "-f", "raw", "-F", "raw", src.toString(), uri("other")).ok();
        Path back = dir.resolve("back.raw");
        run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri("other"), back.toString()).ok();
        assertArrayEquals(b, Files.readAllBytes(back));
        assertTrue(run("qemu-img", "info", uri("other")).ok().out().contains("virtual size: 4 MiB"));
    }

    @Test
    void theModulesOwnClientReadsTheAllocationMap() throws Exception {
        run("qemu-io", "-f", "raw", "-c", "write -P 1 4M 1M", uri("disk")).ok();
        try (NbdClient c = NbdClient.connect(server.socket(), "disk", "base:allocation")) {
            List<NbdClient.Status> s = c.blockStatus(0, 64 * MIB);
            assertEquals(List.of(new NbdClient.Status(0, 4 * MIB, 3), new NbdClient.Status(4 * MIB, MIB, 0),
                    new NbdClient.Status(5 * MIB, 59 * MIB, 3)), s);
        }
    }

    /** A client that breaks the protocol loses its connection; the server and its other clients go on. */
    @Test
    void malformedHandshakesAndRequestsCloseOnlyTheirConnection() throws Exception {
        String script = String.join("\n",
                "import socket, struct, sys",
                "def conn():",
                "    s = socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(sys.argv[1])",
                "    hello = s.recv(18, socket.MSG_WAITALL)",
                "    assert hello[:16] == b'NBDMAGICIHAVEOPT', hello",
                "    return s",
                "def closed(s):",
                "    try:",
                "        return s.recv(1) == b''",
                "    except ConnectionResetError:",
                "        return True",
                "def opt(s, o, data=b'', length=None):",
                "    s.sendall(b'IHAVEOPT' + struct.pack('>II', o, len(data) if length is None else length) + data)",
                "def reply(s):",
                "    magic, o, t, n = struct.unpack('>QIII', s.recv(20, socket.MSG_WAITALL))",
                "    return o, t, s.recv(n, socket.MSG_WAITALL) if n else b''",
                "s = conn(); s.sendall(struct.pack('>I', 0)); print('oldstyle-flags', closed(s))",
                "s = conn(); s.sendall(struct.pack('>I', 1)); opt(s, 3, length=0xffffffff); print('huge-option', closed(s))",
                "s = conn(); s.sendall(struct.pack('>I', 1)); opt(s, 99, b'xyz'); o, t, _ = reply(s)",
                "print('unknown-option', hex(t))",
                "opt(s, 3); names = []",
                "while True:",
                "    o, t, d = reply(s)",
                "    if t == 1: break",
                "    names.append(d[4:].decode())",
                "print('list', ','.join(names))",
                "opt(s, 7, struct.pack('>I', 4) + b'nope' + struct.pack('>H', 0)); o, t, d = reply(s)",
                "print('go-unknown', hex(t))",
                "opt(s, 7, struct.pack('>I', 4) + b'disk' + struct.pack('>H', 0))",
                "while reply(s)[1] != 1: pass",
                "s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 0, 1, 64 * 1024 * 1024 - 512, 4096))",
                "magic, err, cookie = struct.unpack('>IIQ', s.recv(16, socket.MSG_WAITALL))",
                "print('read-past-end', err, cookie)",
                "s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 1, 4, 64 * 1024 * 1024 - 4096, 8192) + b'w' * 8192)",
                "magic, err, cookie = struct.unpack('>IIQ', s.recv(16, socket.MSG_WAITALL))",
                "print('write-past-end', err, cookie)  # its payload was read: the next request is where it should be",
                "s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 1, 5, 0, 6 << 20) + b'\\x42' * (6 << 20))",
                "magic, err, cookie = struct.unpack('>IIQ', s.recv(16, socket.MSG_WAITALL))",
                "s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 0, 6, 0, 6 << 20))",
                "magic, err, cookie = struct.unpack('>IIQ', s.recv(16, socket.MSG_WAITALL))",
                "data = b''",
                "while len(data) < 6 << 20:",
                "    data += s.recv((6 << 20) - len(data))",
                "print('big-read', err, cookie, len(data), data == b'\\x42' * (6 << 20))",
                "s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 99, 2, 0, 0))",
                "magic, err, cookie = struct.unpack('>IIQ', s.recv(16, socket.MSG_WAITALL))",
                "print('unknown-command', err, cookie)",
                "s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 1, 3, 0, 0xffffffff))",
                "print('huge-write', closed(s))",
                "s = conn(); s.sendall(struct.pack('>I', 3)); opt(s, 7, struct.pack('>I', 4) + b'disk' + struct.pack('>H', 0))",
                "while reply(s)[1] != 1: pass",
                "s.sendall(b'\\x00' * 28); print('bad-magic', closed(s))");
        String out = run("python3", "-c", script, server.socket().toString()).ok().out();
        assertTrue(out.contains("oldstyle-flags True"), out);
        assertTrue(out.contains("huge-option True"), out);
        assertTrue(out.contains("unknown-option 0x80000001"), "ERR_UNSUP, and the next option is read: " + out);
        assertTrue(out.contains("list disk,other"), out);
        assertTrue(out.contains("go-unknown 0x80000006"), "ERR_UNKNOWN: " + out);
        assertTrue(out.contains("read-past-end 22 1"), "EINVAL: " + out);
        assertTrue(out.contains("unknown-command 22 2"), out);
        assertTrue(out.contains("write-past-end 28 4"), "ENOSPC: " + out);
        assertTrue(out.contains("big-read 0 6 6291456 True"), "a 6 MiB write and read in 4 MiB pieces: " + out);
        assertTrue(out.contains("huge-write True"), out);
        assertTrue(out.contains("bad-magic True"), out);
        run("qemu-io", "-f", "raw", "-c", "write -P 9 0 4k", "-c", "read -P 9 0 4k", uri("disk")).ok();
        assertEquals(0, waitForNoClients(), "every broken connection was closed");
    }

    /** Python: go(name) connects to the server at sys.argv[1] and opens export {@code name} (OPT_GO), a socket back. */
    private static final String GO = String.join("\n",
            "def go(name=b'disk'):",
            "    s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sys.argv[1])",
            "    s.recv(18, socket.MSG_WAITALL); s.sendall(struct.pack('>I', 3))",
            "    s.sendall(b'IHAVEOPT' + struct.pack('>III', 7, 4 + len(name) + 2, len(name)) + name + struct.pack('>H', 0))",
            "    while True:",
            "        magic, o, t, n = struct.unpack('>QIII', s.recv(20, socket.MSG_WAITALL))",
            "        if n: s.recv(n, socket.MSG_WAITALL)",
            "        if t == 1: return s");

    /**
     * Requests in flight: 64 writes sent before any reply is read, then 64 reads, each answered
     * once, by cookie. A client that sends reads and never reads the replies is hung up on once a
     * reply has waited past the limit (2 s here), and one that never finishes its handshake too;
     * meanwhile another client is served as if they were not there.
     */
    @Test
    void requestsInFlightAreAllAnsweredAndClientsThatStallAreHungUpOn() throws Exception {
        String script = String.join("\n",
                "import socket, struct, sys, time",
                GO,
                "def req(s, typ, cookie, off, n, data=b''):",
                "    s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, typ, cookie, off, n) + data)",
                "def simple(s):",
                "    magic, err, cookie = struct.unpack('>IIQ', s.recv(16, socket.MSG_WAITALL))",
                "    assert magic == 0x67446698, hex(magic)",
                "    return err, cookie",
                "s = go()",
                "for i in range(64): req(s, 1, 1000 + i, i * 4096, 4096, bytes([i]) * 4096)",
                "got = sorted(simple(s) for _ in range(64))",
                "print('writes', got == [(0, 1000 + i) for i in range(64)])",
                "for i in range(64): req(s, 0, 2000 + i, i * 4096, 4096)",
                "ok = set()",
                "for _ in range(64):",
                "    err, cookie = simple(s); data = s.recv(4096, socket.MSG_WAITALL)",
                "    if err == 0 and data == bytes([cookie - 2000]) * 4096: ok.add(cookie)",
                "print('reads', len(ok))",
                "hog = go()",
                "hog.sendall(b''.join(struct.pack('>IHHQQI', 0x25609513, 0, 0, i, 0, 1 << 20) for i in range(200)))",
                "t = time.time(); other = go(); req(other, 0, 7, 0, 4096); err, cookie = simple(other)",
                "print('other-served', err, cookie, other.recv(4096, socket.MSG_WAITALL) == bytes([0]) * 4096)",
                "mute = socket.socket(socket.AF_UNIX); mute.settimeout(30); mute.connect(sys.argv[1])",
                "time.sleep(5)  # past the limit on an unread reply (2 s, seen within 0.5 s), while the hog reads nothing",
                "n = 0",
                "try:",
                "    while True:",
                "        b = hog.recv(1 << 20)",
                "        if not b: break",
                "        n += len(b)",
                "except ConnectionResetError: pass",
                "print('hog-hung-up', n < 200 << 20)",
                "mute.recv(18, socket.MSG_WAITALL); t = time.time()",
                "print('mute-hung-up', mute.recv(1) == b'', time.time() - t < 10)");
        String out = run("python3", "-c", script, server.socket().toString()).ok().out();
        assertTrue(out.contains("writes True"), "64 writes in flight, each answered once: " + out);
        assertTrue(out.contains("reads 64"), "64 reads in flight, each with its own data: " + out);
        assertTrue(out.contains("other-served 0 7 True"), out);
        assertTrue(out.contains("hog-hung-up True"), "a client that does not read is hung up on: " + out);
        assertTrue(out.contains("mute-hung-up True True"), "a client that sends no option is hung up on: " + out);
        assertEquals(0, waitForNoClients(), "every connection ended");
        assertEquals(disk.opens.get(), disk.closes.get(), "every export opened was closed");
    }

    /**
     * A write whose data trickles in is hung up on once its client has kept the server waiting,
     * over the whole payload, past the limit (2 s here): a 24 MiB write at 1 MiB every 0.3 s
     * keeps each 4 MiB piece within it, and the whole payload three times past it. (The clock
     * started again at each piece, so such a write held its buffer for as long as the client
     * liked.) The same write at full speed is answered.
     */
    @Test
    void aWriteWhosePayloadTricklesInIsHungUpOnOverTheWholePayload() throws Exception {
        String script = String.join("\n",
                "import socket, struct, sys, time",
                GO,
                "def write24(s, pause):",
                "    s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 1, 9, 0, 24 << 20))",
                "    sent = 0",
                "    try:",
                "        for i in range(24):",
                "            s.sendall(bytes([i]) * (1 << 20)); sent += 1",
                "            time.sleep(pause)",
                "        magic, err, cookie = struct.unpack('>IIQ', s.recv(16, socket.MSG_WAITALL))",
                "        return sent, err",
                "    except (BrokenPipeError, ConnectionResetError, struct.error):",
                "        return sent, None",
                "print('quick', write24(go(), 0))",
                "t = time.time()",
                "sent, err = write24(go(), 0.3)",
                "print('trickle', sent, err, round(time.time() - t, 1))");
        String out = run("python3", "-c", script, server.socket().toString()).ok().out();
        assertTrue(out.contains("quick (24, 0)"), "a write at full speed is answered: " + out);
        Matcher m = Pattern.compile("trickle (\\d+) None ([0-9.]+)").matcher(out);
        assertTrue(m.find(), "the trickling write is hung up on, not answered: " + out);
        assertTrue(Integer.parseInt(m.group(1)) < 16, "before most of its payload came (" + out + ")");
        assertEquals(0, waitForNoClients(), "every connection ended");
    }

    /**
     * A client that sends requests the server refuses at once (reads of 64 MiB, past what it
     * serves) and reads none of the answers: the server stops reading its requests once 64
     * answers wait, so its memory stays bounded (the client's send blocks, a few thousand
     * requests in, until the watchdog hangs up on it), and another client is served meanwhile. (A review found the answers queued without bound: the heap, the whole
     * daemon's, ran out.)
     */
    @Test
    void aClientThatReadsNoAnswersToRefusedRequestsIsHeldBackNotQueuedForWithoutBound() throws Exception {
        String script = String.join("\n",
                "import socket, struct, sys",
                GO,
                "hog = go()",
                "hog.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)",
                "hog.settimeout(5)",
                "sent = 0",
                "big = b''.join(struct.pack('>IHHQQI', 0x25609513, 0, 0, i, 0, 64 << 20) for i in range(1000))",
                "try:",
                "    for _ in range(1000):  # a million requests, 28 MB (without the bound: 134,000 read in 2 s here)",
                "        hog.sendall(big); sent += 1000",
                "except (socket.timeout, BrokenPipeError, ConnectionResetError) as e: print('stopped-by', type(e).__name__)  # held back, then hung up on",
                "print('held-back', sent < 30000, sent)",
                "other = go()",
                "other.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 0, 7, 0, 4096))",
                "magic, err, cookie = struct.unpack('>IIQ', other.recv(16, socket.MSG_WAITALL))",
                "print('other-served', err, cookie, len(other.recv(4096, socket.MSG_WAITALL)))");
        String out = run("python3", "-c", script, server.socket().toString()).ok().out();
        assertTrue(out.contains("held-back True"), "its requests are no longer read: " + out);
        assertTrue(out.contains("other-served 0 7 4096"), out);
    }

    @Test
    void quickRequestsAreDoneOnTheReadingThreadAndSlowOnesSideBySideOnWorkers() throws Exception {
        // quick: under 50 ms, so that a write in memory is quick on a loaded machine too (with the
        // default 20 µs a preempted worker made half of them go to workers, in CI) and a read
        // of 300 ms is slow
        server.close();
        listen(LIMITS.withQuick(Duration.ofMillis(50)));
        String script = String.join("\n",
                "import socket, struct, sys, time",
                "s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sys.argv[1])",
                "s.recv(18, socket.MSG_WAITALL); s.sendall(struct.pack('>I', 3))",
                "s.sendall(b'IHAVEOPT' + struct.pack('>III', 7, 4 + 4 + 2, 4) + b'disk' + struct.pack('>H', 0))",
                "while True:",
                "    magic, o, t, n = struct.unpack('>QIII', s.recv(20, socket.MSG_WAITALL))",
                "    if n: s.recv(n, socket.MSG_WAITALL)",
                "    if t == 1: break",
                "def req(typ, cookie, off, n, data=b''):",
                "    return struct.pack('>IHHQQI', 0x25609513, 0, typ, cookie, off, n) + data",
                "def answers(k, n):",
                "    for _ in range(k):",
                "        magic, err, cookie = struct.unpack('>IIQ', s.recv(16, socket.MSG_WAITALL))",
                "        assert magic == 0x67446698 and err == 0, (hex(magic), err)",
                "        if n: s.recv(n, socket.MSG_WAITALL)",
                "for r in range(8):  # 64 writes in flight, 8 times",
                "    s.sendall(b''.join(req(1, i, i * 4096, 4096, bytes([i]) * 4096) for i in range(64)))",
                "    answers(64, 0)",
                "print('writes-done', flush=True)",
                "sys.stdin.readline()  # the test makes reads slow",
                "t = time.time()",
                "s.sendall(b''.join(req(0, i, i * 4096, 4096) for i in range(4)))",
                "answers(4, 4096)",
                "print('slow-reads %.3f' % (time.time() - t), flush=True)");
        Process p = new ProcessBuilder("python3", "-c", script, server.socket().toString()).redirectErrorStream(true)
                .start();
        try {
            var out = new java.io.BufferedReader(new java.io.InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
            assertEquals("writes-done", out.readLine());
            List<String> threads = new ArrayList<>(disk.writeThreads);
            assertEquals(512, threads.size());
            // the first 64 go to workers, read before one of them was seen to be quick; then the reading thread does them
            long first = threads.subList(0, 64).stream().filter(t -> t.startsWith("io-")).count();
            long onReader = threads.subList(64, 512).stream().filter(t -> t.startsWith("nbd-")).count();
            assertTrue(first > 0, "before any was seen to be quick, writes went to workers");
            // all but a few: a worker may not yet have given its place back when the next batch
            // comes (the old code did none of them there: each batch came at once, none alone)
            assertTrue(onReader >= 440, "writes done on the reading thread, once seen to be quick: " + onReader
                    + " of 448");
            disk.readMillis = 300;
            p.getOutputStream().write('\n');
            p.getOutputStream().flush();
            String line = out.readLine();
            assertTrue(line != null && line.startsWith("slow-reads "), line);
            double seconds = Double.parseDouble(line.substring("slow-reads ".length()));
            // on the reading thread, one after the other, they would take 1.2 s
            assertTrue(seconds < 0.9, "4 reads of 300 ms each in flight took " + seconds + " s");
            assertTrue(p.waitFor(30, TimeUnit.SECONDS));
            assertEquals(0, p.exitValue());
        } finally {
            p.destroyForcibly();
        }
    }

    private int waitForNoClients() throws InterruptedException {
        for (int i = 0; i < 100 && server.clients() > 0; i++) {
            Thread.sleep(50);
        }
        return server.clients();
    }

    @Test
    void aStaleSocketFileIsReplacedAndAnythingElseThereIsRefused() throws Exception {
        server.close();
        Path regular = dir.resolve("file");
        Files.writeString(regular, "mine");
        try {
            NbdServer.listen(regular, MemoryExport.serving(Map.of()), LIMITS, scheduler).close();
            throw new AssertionError("listened over a regular file");
        } catch (IOException e) {
            assertEquals("mine", Files.readString(regular, StandardCharsets.UTF_8));
        }
        server = NbdServer.listen(dir.resolve("nbd.sock"), MemoryExport.serving(Map.of("disk", disk)), LIMITS, scheduler);
        run("qemu-io", "-f", "raw", "-c", "read -P 0 0 4k", uri("disk")).ok();
    }
}
