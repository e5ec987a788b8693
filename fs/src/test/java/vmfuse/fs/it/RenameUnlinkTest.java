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
 * Renames and unlinks of open images and devices (FAULTS.md F1, issue 14): libfuse 2 hides an
 * open target before the rename onto it, and does not undo that if the rename fails. A refused
 * rename must change nothing.
 */
@Tag("integration")
class RenameUnlinkTest {
    static final long MiB = 1 << 20;

    /** A process holding {@code file} open (read-write) until closed, as QEMU holds its disk. */
    private static Proc.Background holdOpen(Path file) throws InterruptedException {
        Proc.Background p = Proc.start("python3", "-c",
                "import os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); print('open', flush=True); time.sleep(600)",
                file.toString());
        for (int i = 0; i < 100 && !p.output().contains("open"); i++) {
            Thread.sleep(50);
        }
        assertTrue(p.output().contains("open"), "could not hold " + file + " open: " + p.output());
        return p;
    }

    /** The errno name a python os.rename or os.unlink fails with, or "ok". */
    private static String pyErrno(String call, Path... paths) {
        StringBuilder args = new StringBuilder();
        for (int i = 0; i < paths.length; i++) {
            args.append(i == 0 ? "" : ", ").append("sys.argv[").append(i + 1).append("]");
        }
        String[] cmd = new String[3 + paths.length];
        cmd[0] = "python3";
        cmd[1] = "-c";
        cmd[2] = "import os, sys, errno\ntry:\n    os." + call + "(" + args + ")\n    print('ok')\n"
                + "except OSError as e:\n    print(errno.errorcode[e.errno])";
        for (int i = 0; i < paths.length; i++) {
            cmd[3 + i] = paths[i].toString();
        }
        return Proc.ok(cmd).out().trim();
    }

    /** The file's sha256 once an open of it by name succeeds (within 3 s). */
    private static String shaOnceItOpens(Path file) throws Exception {
        for (int i = 0; ; i++) {
            try {
                return Disk.sha256(file);
            } catch (java.nio.file.NoSuchFileException e) {
                if (i == 30) {
                    throw e;
                }
                Thread.sleep(100);
            }
        }
    }

    private static List<String> ls(Path dir) throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void aRefusedRenameOfAJournalDeviceOntoAnOpenImageKeepsTheImage() throws Exception {
        try (Mounted m = Mounted.create()) {
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("b.raw").toString(), "4M");
            Proc.ok("dd", "if=/dev/urandom", "of=" + m.image("b.raw"), "bs=1M", "count=1", "conv=notrunc,fsync",
                    "status=none");
            String sum = Disk.sha256(m.backing("b.raw"));
            Proc.ok("truncate", "-s", "1M", m.mnt.resolve("journals/x").toString());
            try (Proc.Background qemu = holdOpen(m.image("b.raw"))) {
                assertEquals("EXDEV", pyErrno("rename", m.mnt.resolve("journals/x"), m.image("b.raw")));
                assertEquals(List.of("b.raw"), ls(m.mnt.resolve("images")), "still listed");
                assertEquals(List.of("b.raw"), ls(m.store.resolve("images")), "still in the store, nothing hidden");
                // libfuse moved its node to the hidden name and does not move it back: the kernel's
                // cached entry answers ENOENT until it expires (libfuse's entry_timeout, 1 s)
                assertEquals(sum, shaOnceItOpens(m.image("b.raw")), "opened by its name again");
            }
            Thread.sleep(300); // the holder's close reaches the daemon
            assertEquals(List.of("b.raw"), ls(m.store.resolve("images")), "and still there after the last close");
            assertEquals(sum, Disk.sha256(m.backing("b.raw")));
            assertEquals(List.of("x"), ls(m.mnt.resolve("journals")));
        }
    }

    @Test
    void aRefusedRenameOntoARunningImageKeepsIt() throws Exception {
        try (Mounted m = Mounted.create()) {
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("vm1.raw").toString(), "4M");
            Proc.ok("dd", "if=/dev/urandom", "of=" + m.image("vm1.raw"), "bs=1M", "count=1", "conv=notrunc,fsync",
                    "status=none");
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("x.raw").toString(), "4M");
            String sum = Disk.sha256(m.backing("vm1.raw"));
            m.vmfuse("vm", "add", "vm1", "--image", "images/vm1.raw", "--agent-socket",
                    m.root.resolve("vm1.agent").toString(), m.mnt.toString()).assertOk();
            try (Proc.Background qemu = holdOpen(m.image("vm1.raw"))) {
                // before: refused with EBUSY, and vm1.raw deleted from the store all the same
                assertEquals("EBUSY", pyErrno("rename", m.image("x.raw"), m.image("vm1.raw")));
                assertEquals("EBUSY", pyErrno("unlink", m.image("vm1.raw")), "nor unlinked while it runs");
                assertEquals(List.of("vm1.raw", "x.raw"), ls(m.store.resolve("images")));
                assertEquals(sum, Disk.sha256(m.image("vm1.raw")));
            }
            Thread.sleep(300);
            assertEquals(List.of("vm1.raw", "x.raw"), ls(m.store.resolve("images")));
            assertEquals(sum, Disk.sha256(m.backing("vm1.raw")));
            m.awaitLog("vm1.raw is a running VM's image");
        }
    }

    /**
     * A running VM's image that only the NBD door has open: libfuse counts it closed and asks a
     * plain unlink (no hide, where it was refused), refused all the same, and the image stays in
     * the store (a review found the running disk deleted).
     */
    @Test
    void aRunningImageOpenOnlyThroughTheNbdDoorIsNotUnlinked() throws Exception {
        try (Mounted m = Mounted.prepare()) {
            Path sock = m.root.resolve("nbd.sock");
            m.mount("--nbd", "unix:" + sock);
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("vm1.raw").toString(), "4M");
            String sum = Disk.sha256(m.backing("vm1.raw"));
            m.vmfuse("vm", "add", "vm1", "--image", "images/vm1.raw", "--agent-socket",
                    m.root.resolve("vm1.agent").toString(), m.mnt.toString()).assertOk();
            try (Proc.Background qemu = Proc.start("qemu-io", "-f", "raw", "nbd+unix:///images/vm1.raw?socket=" + sock,
                    "-c", "write -P 7 0 64k", "-c", "sleep 60000")) {
                Poll.until(() -> { // its connection is open and has written (qemu-io then holds it 60 s)
                    try {
                        return !Disk.sha256(m.backing("vm1.raw")).equals(sum);
                    } catch (Exception e) {
                        throw new AssertionError(e);
                    }
                }, qemu::output);
                assertEquals("EBUSY", pyErrno("unlink", m.image("vm1.raw")), "not unlinked while it runs");
                assertEquals(List.of("vm1.raw"), ls(m.store.resolve("images")));
            }
            assertTrue(!Disk.sha256(m.backing("vm1.raw")).equals(sum), "the guest's write is in the image");
        }
    }

    @Test
    void aRenameOntoAnOpenImageReplacesItAndItsSpaceReturnsAtTheLastClose() throws Exception {
        try (Mounted m = Mounted.create()) {
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("b.raw").toString(), "8M");
            Proc.ok("dd", "if=/dev/urandom", "of=" + m.image("b.raw"), "bs=1M", "count=8", "conv=notrunc,fsync",
                    "status=none");
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("a.raw").toString(), "1M");
            try (Proc.Background qemu = holdOpen(m.image("b.raw"))) {
                assertEquals("ok", pyErrno("rename", m.image("a.raw"), m.image("b.raw")));
                assertEquals(List.of("b.raw"), ls(m.mnt.resolve("images")), "the hidden name is not listed");
                assertEquals(MiB, Files.size(m.image("b.raw")), "b.raw is a.raw now");
                assertEquals(1, ls(m.store.resolve("images")).stream().filter(n -> n.startsWith(".fuse_hidden")).count(),
                        "the replaced file waits for its last close");
            }
            for (int i = 0; i < 50 && ls(m.store.resolve("images")).size() > 1; i++) {
                Thread.sleep(100);
            }
            assertEquals(List.of("b.raw"), ls(m.store.resolve("images")), "released after the last close");
            m.awaitLog("reason=unlink");
        }
    }

    @Test
    void whatADaemonKilledWhileItWasHiddenLeftIsRemovedAtTheNextMount() throws Exception {
        try (Mounted m = Mounted.create()) {
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("b.raw").toString(), "4M");
            Proc.ok("truncate", "-s", "1M", m.mnt.resolve("journals/j").toString());
            try (Proc.Background qemu = holdOpen(m.image("b.raw")); Proc.Background guest = holdOpen(
                    m.mnt.resolve("journals/j"))) {
                assertEquals("ok", pyErrno("unlink", m.image("b.raw")));
                assertEquals("ok", pyErrno("unlink", m.mnt.resolve("journals/j")));
                assertEquals(List.of(), ls(m.mnt.resolve("images")));
                m.daemonPid().flatMap(ProcessHandle::of).ifPresent(Proc::kill);
            }
            Proc.run("fusermount", "-u", "-z", m.mnt.toString());
            m.mount();
            assertEquals(List.of(), ls(m.store.resolve("images")), "the hidden image is gone");
            assertEquals(List.of(), ls(m.mnt.resolve("journals")));
            m.awaitLog("left hidden by a daemon");
            m.awaitLog("removed 1 journal device(s) left hidden");
        }
    }
}
