package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;

/** qemu-img and qemu-io on images in a real mount, checked as a user would check them. */
class QemuToolsTest extends OnOneMount {

    @Test
    void qemuImgCreatesRawAndQcow2InTheStore() {
        Proc.ok("qemu-img", "create", "-f", "raw", m.image("c.raw").toString(), "64M");
        Proc.ok("qemu-img", "create", "-f", "qcow2", m.image("c.qcow2").toString(), "10G");
        assertTrue(Files.isRegularFile(m.backing("c.raw")));
        assertTrue(Files.isRegularFile(m.backing("c.qcow2")));
        String info = Proc.ok("qemu-img", "info", "--output=json", m.image("c.qcow2").toString()).out();
        assertTrue(info.contains("\"format\": \"qcow2\""), info);
        assertTrue(info.contains("\"virtual-size\": 10737418240"), info);
        Proc.ok("qemu-img", "check", m.image("c.qcow2").toString());
        assertEquals(64L << 20, m.backing("c.raw").toFile().length());
    }

    @Test
    void qemuIoPatternReadsBackOnRawAndQcow2() {
        Proc.ok("qemu-img", "create", "-f", "raw", m.image("p.raw").toString(), "16M");
        Proc.ok("qemu-img", "create", "-f", "qcow2", m.image("p.qcow2").toString(), "1G");
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0xab 0 1M", "-c", "read -P 0xab 0 1M",
                m.image("p.raw").toString());
        Proc.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", "-c", "read -P 0xab 0 1M",
                m.image("p.qcow2").toString());
        // a fresh process, past any cache of the writer: read what landed, then a pattern mismatch must fail
        Proc.ok("qemu-io", "-f", "qcow2", "-c", "read -P 0xab 0 1M", m.image("p.qcow2").toString());
        Proc.Result wrong = Proc.run("qemu-io", "-f", "qcow2", "-c", "read -P 0xcd 0 1M", m.image("p.qcow2").toString());
        assertTrue(wrong.out().contains("Pattern verification failed") || !wrong.ok(), wrong.describe());
        Proc.ok("qemu-img", "check", m.image("p.qcow2").toString());
    }

    @Test
    void cacheNoneOpensWithODirectAndWorks() {
        // -t none: QEMU's cache=none, O_DIRECT on the mount (README: what it means here)
        Proc.ok("qemu-img", "create", "-f", "qcow2", m.image("d.qcow2").toString(), "256M");
        Proc.ok("qemu-io", "-t", "none", "-f", "qcow2", "-c", "write -P 0x5a 4k 2M", "-c", "flush",
                "-c", "read -P 0x5a 4k 2M", m.image("d.qcow2").toString());
        Proc.ok("qemu-io", "-t", "none", "-f", "qcow2", "-c", "read -P 0x5a 4k 2M", m.image("d.qcow2").toString());
        Proc.ok("qemu-io", "-t", "writeback", "-f", "qcow2", "-c", "read -P 0x5a 4k 2M", m.image("d.qcow2").toString());
        Proc.ok("qemu-img", "check", m.image("d.qcow2").toString());
    }

    @Test
    void convertIntoAndOutOfTheMountKeepsEveryByte() throws Exception {
        Path outside = m.root.resolve("src.qcow2");
        Proc.ok("qemu-img", "create", "-f", "qcow2", outside.toString(), "64M");
        Proc.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 3M", "-c", "write -P 0x22 40M 5M", outside.toString());

        Proc.ok("qemu-img", "convert", "-f", "qcow2", "-O", "raw", outside.toString(), m.image("conv.raw").toString());
        Proc.ok("qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", outside.toString(), m.image("conv.qcow2").toString());
        Proc.ok("qemu-img", "compare", outside.toString(), m.image("conv.raw").toString());
        Proc.ok("qemu-img", "compare", outside.toString(), m.image("conv.qcow2").toString());
        Proc.ok("qemu-img", "check", m.image("conv.qcow2").toString());

        Path back = m.root.resolve("back.qcow2");
        Proc.ok("qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", m.image("conv.qcow2").toString(), back.toString());
        Proc.ok("qemu-img", "compare", outside.toString(), back.toString());
        // and compare must notice a difference: it is not a test that always passes
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x33 0 4k", m.image("conv.raw").toString());
        assertFalse(Proc.run("qemu-img", "compare", outside.toString(), m.image("conv.raw").toString()).ok());
    }

    @Test
    void flushAndFsyncReachTheBackingFile() throws Exception {
        Proc.ok("qemu-img", "create", "-f", "raw", m.image("s.raw").toString(), "8M");
        String pid = String.valueOf(m.daemonPid().orElseThrow());
        String seen;
        try (Proc.Background strace = Proc.start("strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-p", pid)) {
            awaitTraced(pid);
            Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 1 0 64k", "-c", "flush", m.image("s.raw").toString());
            Proc.ok("xfs_io", "-c", "pwrite 0 4k", "-c", "fsync", m.image("s.raw").toString());
            // strace prints a call when it returns, a moment after the tool has its answer
            Poll.until(() -> strace.output().contains("fdatasync(") && strace.output().contains("fsync("),
                    strace::output, 10);
            seen = strace.output();
        }
        assertTrue(seen.contains("fdatasync("), "guest flush (fdatasync) did not reach the backing file:\n" + seen);
        assertTrue(seen.contains("fsync("), "fsync did not reach the backing file:\n" + seen);
    }

    /**
     * FAULTS.md F2: fsync of images/ (what tools that write a file, rename it into place and sync
     * the directory do) syncs STORE/images. Before, vmfuse had no fsyncdir: the kernel answered
     * the first one with success, and never asked again.
     */
    @Test
    void anFsyncOfImagesSyncsTheStoreDirectory() throws Exception {
        Proc.ok("qemu-img", "create", "-f", "raw", m.image("t.raw").toString(), "1M");
        Path images = m.image("t.raw").getParent();
        String pid = String.valueOf(m.daemonPid().orElseThrow());
        String dir = m.backing("t.raw").getParent().toString() + ">";
        String seen;
        try (Proc.Background strace = Proc.start("strace", "-f", "-qq", "-y", "-e", "trace=fsync", "-p", pid)) {
            awaitTraced(pid);
            Proc.ok("mv", m.image("t.raw").toString(), m.image("u.raw").toString());
            Proc.ok("python3", "-c", "import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.fsync(fd)",
                    images.toString());
            Poll.until(() -> strace.output().lines().filter(l -> l.contains("fsync(") && l.contains(dir)).count() >= 2,
                    strace::output, 10);
            seen = strace.output();
        }
        assertTrue(seen.lines().filter(l -> l.contains("fsync(") && l.contains(dir)).count() >= 2,
                "fsync of images/ did not reach " + dir + " (twice):\n" + seen);
    }

    /** Waits until strace is attached to every thread of {@code pid} (it adds the threads made later itself). */
    private static void awaitTraced(String pid) {
        Path tasks = Path.of("/proc", pid, "task");
        Poll.until(() -> {
            try (var all = Files.list(tasks)) {
                return all.allMatch(t -> {
                    try {
                        return Files.readAllLines(t.resolve("status")).stream()
                                .anyMatch(l -> l.startsWith("TracerPid:") && !l.endsWith("\t0"));
                    } catch (IOException e) { // a thread that ended meanwhile
                        return true;
                    }
                });
            } catch (IOException e) {
                throw new AssertionError(e);
            }
        }, () -> "strace is not attached to every thread of " + pid, 30);
    }
}
