package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The NBD door (vmfuse mount --nbd unix:PATH): the images and journal devices of the mount served
 * to QEMU's and libnbd's own clients, through the same core as FUSE: a discard is punched and
 * counted, data written one way reads back the other.
 */
@Tag("integration")
class NbdExportTest {
    static final long MiB = 1 << 20;
    static Path socketDir;
    static Path socket;
    static Mounted m;

    @BeforeAll
    static void mount() throws Exception {
        socketDir = Files.createTempDirectory(Path.of("/tmp"), "vmfuse-nbd-");
        socket = socketDir.resolve("nbd.sock");
        // allocation moves only with what we do; atomic_o_trunc: open(2)'s O_TRUNC reaches the daemon
        m = Mounted.onTmpfs("512m", "--nbd", "unix:" + socket, "-o", "atomic_o_trunc");
    }

    @AfterAll
    static void unmount() throws Exception {
        m.close();
        Proc.run("rm", "-rf", socketDir.toString());
    }

    private static String uri(String export) {
        return "nbd+unix:///" + export + "?socket=" + socket;
    }

    @Test
    void qemuToolsReadWriteDiscardAndZeroAnImageInAFolderAndTheSpaceIsCounted() throws Exception {
        Files.createDirectories(m.image("t1"));
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("t1/vm.raw").toString(), "64M");
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 16M", "-c", "flush", uri("images/t1/vm.raw"));
        assertEquals(16 * MiB, Disk.allocated(m.backing("t1/vm.raw")));
        assertEquals(Disk.sha256(m.image("t1/vm.raw")), Disk.sha256(m.backing("t1/vm.raw")));
        Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 16M", m.image("t1/vm.raw").toString());

        Proc.ok("qemu-io", "-f", "raw", "-c", "discard 0 4M", "-c", "write -z -u 4M 4M", "-c", "read -P 0 0 8M",
                "-c", "read -P 0x5a 8M 8M", uri("images/t1/vm.raw"));
        assertEquals(8 * MiB, Disk.allocated(m.backing("t1/vm.raw")), "the discard and the zeroes were punched");
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -z 32M 1M", "-c", "read -P 0 32M 1M", uri("images/t1/vm.raw"));
        assertEquals(9 * MiB, Disk.allocated(m.backing("t1/vm.raw")), "zeroes that may not unmap (NO_HOLE) hold space");
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x6b 40M 1M", "-c", "write -z 40M 1M", "-c", "read -P 0 40M 1M",
                uri("images/t1/vm.raw"));
        assertEquals(10 * MiB, Disk.allocated(m.backing("t1/vm.raw")), "NO_HOLE zeroes over data keep its space");
        String status = m.vmfuse("status", m.mnt.toString()).assertOk().out();
        assertTrue(status.lines().anyMatch(l -> l.startsWith("t1/vm.raw") && l.contains(" " + 8 * MiB + " ")),
                "status counts what NBD released under the image's path:\n" + status);

        String map = Proc.ok("nbdinfo", "--map", uri("images/t1/vm.raw")).out();
        assertTrue(map.lines().anyMatch(l -> l.trim().matches("0\\s+8388608\\s+3\\s+hole,zero")), map);
        assertTrue(map.lines().anyMatch(l -> l.trim().matches("8388608\\s+8388608\\s+0\\s+data")), map);
    }

    @Test
    void qemuImgConvertsThroughTheDoorAndNbdinfoListsTheMountsNames() throws Exception {
        Path src = m.root.resolve("src.raw");
        Proc.ok("dd", "if=/dev/urandom", "of=" + src, "bs=1M", "count=8", "status=none");
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("copy.raw").toString(), "8M");
        Proc.ok("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src.toString(), uri("images/copy.raw"));
        Proc.ok("qemu-img", "compare", "-f", "raw", "-F", "raw", src.toString(), m.image("copy.raw").toString());
        Proc.ok("qemu-img", "compare", "-f", "raw", "-F", "raw", src.toString(), uri("images/copy.raw"));

        Proc.ok("sh", "-c", "truncate -s 4M " + m.mnt.resolve("journals/j1"));
        String list = Proc.ok("nbdinfo", "--list", "--json", "nbd+unix:///?socket=" + socket).out();
        assertTrue(list.contains("\"export-name\": \"images/copy.raw\""), list);
        assertTrue(list.contains("\"export-name\": \"journals/j1\""), list);
        assertTrue(Proc.run("nbdinfo", uri("images/nope.raw")).exit() != 0, "no such export");
        assertTrue(Proc.run("nbdinfo", uri("images/../../etc/passwd")).exit() != 0, "no such export");
    }

    /**
     * Bulk copies yield the CPU to small requests (CpuPriority, wired to setpriority): the daemon
     * says so at start, and the workers that wrote a 64 MiB write's 4 MiB pieces are at nice 10
     * for the kernel (nothing small came to them after it).
     */
    @Test
    void theWorkersOfABulkWriteRunAtNice10() throws Exception {
        m.awaitLog("nbd cpu priority: reads and writes of 128 KiB or more run at nice 10, smaller requests at 0");
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("bulk.raw").toString(), "64M");
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x3c 0 64M", uri("images/bulk.raw"));
        long pid = m.daemonPid().orElseThrow();
        List<String> workers = new ArrayList<>();
        int niced = 0;
        try (DirectoryStream<Path> tasks = Files.newDirectoryStream(Path.of("/proc/" + pid + "/task"))) {
            for (Path t : tasks) {
                String name = Files.readString(t.resolve("comm")).strip();
                if (!name.startsWith("io-")) {
                    continue;
                }
                String stat = Files.readString(t.resolve("stat"));
                String nice = stat.substring(stat.lastIndexOf(')') + 2).split(" ")[19 - 3];
                workers.add(name + "=" + nice);
                niced += nice.equals("10") ? 1 : 0;
            }
        }
        assertEquals(8, workers.size(), "the scheduler's workers: " + workers);
        assertTrue(niced >= 1, "a worker that wrote 4 MiB pieces is at nice 10: " + workers);
        Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 0x3c 0 64M", m.image("bulk.raw").toString());
    }

    /** libnbd's nbdcopy (several connections, many requests in flight) and fio's nbd engine with verification. */
    @Test
    void nbdcopyAndFiosNbdEngineWriteAndVerifyThroughTheDoor() throws Exception {
        Path src = m.root.resolve("src2.raw");
        Proc.ok("dd", "if=/dev/urandom", "of=" + src, "bs=1M", "count=16", "status=none");
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("copy2.raw").toString(), "16M");
        Proc.ok("nbdcopy", "--connections=4", "--requests=16", src.toString(), uri("images/copy2.raw"));
        assertEquals(Disk.sha256(src), Disk.sha256(m.backing("copy2.raw")));
        Path back = m.root.resolve("back.raw");
        Proc.ok("nbdcopy", "--connections=4", uri("images/copy2.raw"), back.toString());
        assertEquals(Disk.sha256(src), Disk.sha256(back));

        Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("fio.raw").toString(), "32M");
        Proc.Result fio = Proc.ok("fio", "--name=nbd-verify", "--ioengine=nbd", "--uri=" + uri("images/fio.raw"),
                "--rw=randwrite", "--bs=4k", "--size=32M", "--iodepth=8", "--verify=crc32c", "--do_verify=1",
                "--verify_fatal=1", "--output-format=terse");
        String terse = fio.out().lines().filter(l -> l.startsWith("3;")).findFirst().orElseThrow(
                () -> new AssertionError(fio.describe()));
        String[] f = terse.split(";");
        assertEquals("0", f[4], "fio's error field: " + terse);
        assertEquals("32768", f[46], "fio wrote 32 MiB: " + terse);
        assertEquals("32768", f[5], "and read all of it back, verified: " + terse);
    }

    @Test
    void aJournalDeviceServedOverNbdReadsBackThroughTheMount() throws Exception {
        Proc.ok("sh", "-c", "truncate -s 8M " + m.mnt.resolve("journals/j2"));
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x33 1M 2M", "-c", "flush", uri("journals/j2"));
        Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 0x33 1M 2M", "-c", "read -P 0 0 1M",
                m.mnt.resolve("journals/j2").toString());
        Proc.ok("qemu-io", "-f", "raw", "-c", "discard 1M 1M", "-c", "read -P 0 1M 1M", uri("journals/j2"));
        m.awaitLog("release image=journals/j2 offset=1048576 length=1048576 freed=1048576");
    }

    /** An unmount with an NBD client connected hangs up on it, closes what it had open, and completes. */
    @Test
    void anUnmountHangsUpOnItsNbdClientsAndCompletes() throws Exception {
        Path dir = Files.createTempDirectory(Path.of("/tmp"), "vmfuse-nbd-");
        Path sock = dir.resolve("nbd.sock");
        try (Mounted other = Mounted.create()) {
            other.umount().assertOk();
            other.mount("--nbd", "unix:" + sock);
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", other.image("a.raw").toString(), "4M");
            Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 7 0 1M", "nbd+unix:///images/a.raw?socket=" + sock);
            String idle = String.join("\n", // opens the export, then waits for the server's next word
                    "import socket, struct, sys",
                    "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(120)",
                    "s.recv(18, socket.MSG_WAITALL); s.sendall(struct.pack('>I', 3))",
                    "name = b'images/a.raw'",
                    "s.sendall(b'IHAVEOPT' + struct.pack('>II', 7, 6 + len(name)) + struct.pack('>I', len(name)) + name"
                            + " + struct.pack('>H', 0))",
                    "while True:",
                    "    magic, o, t, n = struct.unpack('>QIII', s.recv(20, socket.MSG_WAITALL)); s.recv(n, socket.MSG_WAITALL)",
                    "    if t == 1: break",
                    "print('open', flush=True)",
                    "print('hung-up' if s.recv(1) == b'' else 'data', flush=True)");
            try (Proc.Background client = Proc.start("python3", "-c", idle, sock.toString())) {
                Poll.until(() -> other.vmfuse("status", other.mnt.toString()).out().lines()
                        .anyMatch(l -> l.startsWith("a.raw") && l.trim().endsWith(" 1")), other::log);
                other.umount().assertOk();
                Poll.until(() -> !client.process.isAlive(), client::output);
                assertTrue(client.output().contains("open\nhung-up"), client.output());
                other.awaitLog("nbd closed unix:" + sock);
                assertTrue(Files.notExists(sock), "the socket is removed");
            }
            other.mount();
            Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 7 0 1M", other.image("a.raw").toString());
        } finally {
            Proc.run("rm", "-rf", dir.toString());
        }
    }

    @Test
    void anNbdSocketThatCannotBeTakenFailsTheMountWithItsReason() throws Exception {
        Mounted other = Mounted.prepare();
        try {
            Path taken = other.root.resolve("taken");
            Files.writeString(taken, "keep");
            Proc.Result r = other.vmfuse("mount", "--store", other.store.toString(), "--nbd", "unix:" + taken,
                    other.mnt.toString());
            assertEquals(1, r.exit(), r.describe());
            assertTrue(r.err().contains("cannot listen for NBD") && r.err().contains(taken + " exists and is not a socket"),
                    r.describe());
            assertEquals("keep", Files.readString(taken));
            assertTrue(Proc.run("mountpoint", "-q", other.mnt.toString()).exit() != 0, "nothing mounted");
            // another store given this class's live socket: refused, and this mount's clients still reach it
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("mine.raw").toString(), "1M");
            Proc.Result live = other.vmfuse("mount", "--store", other.store.toString(), "--nbd", "unix:" + socket,
                    other.mnt.toString());
            assertTrue(live.exit() != 0 && live.err().contains(socket + " is in use"), live.describe());
            assertTrue(Proc.run("mountpoint", "-q", other.mnt.toString()).exit() != 0, "nothing mounted");
            Proc.ok("qemu-img", "info", uri("images/mine.raw"));
            Proc.Result tcp = other.vmfuse("mount", "--store", other.store.toString(), "--nbd", "tcp:127.0.0.1:10809",
                    other.mnt.toString());
            assertTrue(tcp.exit() != 0 && tcp.err().contains("NBD over TCP requires TLS: give --tls-psk FILE"),
                    tcp.describe());
            Proc.Result poll = other.vmfuse("mount", "--store", other.store.toString(), "--nbd",
                    "unix:" + other.root.resolve("p.sock"), "--nbd-poll", "1001", other.mnt.toString());
            assertTrue(poll.exit() != 0 && poll.err().contains("--nbd-poll must be 0..1000 microseconds, not 1001"),
                    poll.describe());
            Proc.Result pollAlone = other.vmfuse("mount", "--store", other.store.toString(), "--nbd-poll", "0",
                    other.mnt.toString());
            assertTrue(pollAlone.exit() != 0 && pollAlone.err().contains("--nbd-poll is for the NBD door"),
                    pollAlone.describe());
            assertTrue(Proc.run("mountpoint", "-q", other.mnt.toString()).exit() != 0, "nothing mounted");
            Path keys = other.root.resolve("keys.psk");
            Files.writeString(keys, "alice:0123456789abcdef0123456789abcdef\n"); // readable by all: refused
            Proc.Result open = other.vmfuse("mount", "--store", other.store.toString(), "--nbd", "tcp:127.0.0.1:10809",
                    "--tls-psk", keys.toString(), other.mnt.toString());
            assertTrue(open.exit() != 0 && open.err().contains("cannot use the TLS keys " + keys)
                    && open.err().contains("chmod 600"), open.describe());
            assertTrue(Proc.run("mountpoint", "-q", other.mnt.toString()).exit() != 0, "nothing mounted");
        } finally {
            other.close();
        }
    }

    /**
     * One door writes an image at a time: while a process has it open for writing through the
     * mount, NBD clients read it but their writes are refused (EPERM, the reason logged); while an
     * NBD client writes it, an open for writing through the mount is refused (EBUSY).
     */
    @Test
    void oneDoorWritesAnImageAtATimeAndBothRead() throws Exception {
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("one.raw").toString(), "8M");
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", m.image("one.raw").toString());
        try (java.nio.channels.FileChannel writer = java.nio.channels.FileChannel.open(m.image("one.raw"),
                java.nio.file.StandardOpenOption.WRITE)) {
            Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 0x11 0 1M", uri("images/one.raw"));
            Proc.Result w = Proc.run("qemu-io", "-f", "raw", "-c", "write -P 0x22 0 4k", uri("images/one.raw"));
            assertTrue(w.exit() != 0 || w.out().contains("Operation not permitted"), w.describe());
            m.awaitLog("image one.raw is being written through the mount");
        }
        Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 0x11 0 1M", m.image("one.raw").toString()); // nothing landed
        // an NBD client that writes, then holds its connection until the test kills it
        Proc.Background holder = Proc.start("python3", "-c", String.join("\n",
                "import socket, struct, sys, time",
                "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.recv(18, socket.MSG_WAITALL)",
                "s.sendall(struct.pack('>I', 3)); name = b'images/one.raw'",
                "s.sendall(b'IHAVEOPT' + struct.pack('>III', 7, 4 + len(name) + 2, len(name)) + name + struct.pack('>H', 0))",
                "while True:",
                "    magic, o, t, n = struct.unpack('>QIII', s.recv(20, socket.MSG_WAITALL))",
                "    if n: s.recv(n, socket.MSG_WAITALL)",
                "    if t == 1: break",
                "s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 1, 1, 0, 4096) + b'\\x33' * 4096)",
                "print('written', struct.unpack('>IIQ', s.recv(16, socket.MSG_WAITALL))[1], flush=True)",
                "time.sleep(120)"), socket.toString());
        try {
            Poll.until(() -> holder.output().contains("written 0"), holder::output);
            Proc.Result fuse = Proc.run("qemu-io", "-f", "raw", "-c", "write -P 0x44 0 4k", m.image("one.raw").toString());
            assertTrue(fuse.exit() != 0, "an open for writing through the mount is refused: " + fuse.describe());
            Proc.Result cut = Proc.run("sh", "-c", ": > " + m.image("one.raw"));
            assertTrue(cut.exit() != 0 && cut.err().contains("busy"), "so is a truncating open: " + cut.describe());
            assertEquals(8 * MiB, Files.size(m.backing("one.raw")), "and nothing was cut");
            Proc.ok("qemu-io", "-f", "raw", "-r", "-c", "read -P 0x33 0 4k", m.image("one.raw").toString());
        } finally {
            holder.close();
        }
        Poll.until(() -> Proc.run("qemu-io", "-f", "raw", "-c", "write -P 0x44 0 4k", m.image("one.raw").toString())
                .ok(), () -> "the mount writes again once the NBD client is gone\n" + m.log());
    }
}
