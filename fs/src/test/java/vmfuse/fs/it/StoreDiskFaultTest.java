package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Issue 13's promise end to end, with the store on a real disk that fails or loses power
 * ({@link NbdDisk}): every flush either fails or survives, nothing flushed before is lost, and
 * the daemon says what happened.
 */
@Tag("integration")
class StoreDiskFaultTest {
    static final long MiB = 1 << 20;

    /** Writes {@code len} bytes of seed {@code seed} at {@code off}, fdatasyncs; true if both succeeded. */
    private static boolean writeAndSync(Path p, long off, int len, int seed) {
        return Disk.writeAndSync(p, off, len, seed).ok();
    }

    /** Whether [off, off + len) of {@code p} holds what {@link #writeAndSync} writes with {@code seed}. */
    private static boolean holds(Path p, long off, int len, int seed) {
        // the seed's bytes' sha256, from the writer itself: it prints it before writing them to /dev/null
        return Disk.readSha(p, off, len).equals(Disk.writeAndSync(Path.of("/dev/null"), 0, len, seed).out().trim());
    }

    @Test
    void onAFailingDiskEveryFlushFailsOrSurvivesAndNothingFlushedBeforeIsLost() throws Exception {
        try (Mounted m = Mounted.prepare(); NbdDisk disk = NbdDisk.create(m.store, "256M")) {
            // no timer's checkpoint: it would open the store again (a new log) once the disk works,
            // between the failure and the flush after it (the tests below show that)
            m.mountWithProperty("vmfuse.test.checkpointSeconds=3600");
            m.vmfuse("journal", "create", "--size", "16M", "j", m.mnt.toString()).assertOk();
            Path j = m.mnt.resolve("journals/j");
            assertTrue(writeAndSync(j, 0, (int) MiB, 1), "a flush on a healthy disk");

            disk.failing(true);
            boolean second = writeAndSync(j, MiB, (int) MiB, 2);
            disk.failing(false);
            boolean third = writeAndSync(j, 2 * MiB, (int) MiB, 3);
            assertFalse(second, "a flush while the disk fails every write");
            assertFalse(third, "a flush after one failed: the kernel reported the error once, a later fdatasync "
                    + "would return 0 without the data on disk");
            m.awaitLog("fdatasync failed"); // the daemon says what happened

            Proc.Result umount = m.umount();
            // the journal store commits at unmount (the disk works again); the final sync of the store's
            // filesystem reports the write error it met: the operator hears of it
            assertNotEquals(0, umount.exit(), umount.describe());
            assertTrue(umount.err().contains("final sync failed"), umount.describe());

            m.mount();
            assertTrue(holds(j, 0, (int) MiB, 1), "flushed before the disk failed");
            assertTrue(writeAndSync(j, 3 * MiB, (int) MiB, 4), "mounted again, flushes work");
            m.umount().assertOk();
        }
    }

    /**
     * After a failed flush every later flush of the journal store fails (the kernel reported the
     * write error once), until the store is opened again: `vmfuse journal reopen` does it in
     * place, with the mount, its images and an open handle on the journal device going on, where
     * before it took an unmount, which stops every VM of the mount. The handle's writer sees its
     * flushes fail while the disk fails, then succeed on the same descriptor; every write whose
     * flush returned is there after a remount.
     */
    @Test
    void afterAFailedFlushJournalReopenMakesFlushesWorkAgainWithoutARemount() throws Exception {
        failedFlushThenReopen(true);
    }

    /** As above, with no command: the daemon's checkpoint timer finds the redo log refusing and opens the store again. */
    @Test
    void afterAFailedFlushTheDaemonOpensTheJournalStoreAgainOnItsOwn() throws Exception {
        failedFlushThenReopen(false);
    }

    private void failedFlushThenReopen(boolean byOperator) throws Exception {
        try (Mounted m = Mounted.prepare(); NbdDisk disk = NbdDisk.create(m.store, "256M")) {
            if (byOperator) {
                m.mountWithProperty("vmfuse.test.checkpointSeconds=3600"); // no timer's checkpoint reopens it first
            } else {
                m.mount();
            }
            m.vmfuse("journal", "create", "--size", "16M", "j", m.mnt.toString()).assertOk();
            Path j = m.mnt.resolve("journals/j");
            assertTrue(writeAndSync(j, 0, (int) MiB, 1), "a flush on a healthy disk");
            Path stop = m.root.resolve("stop-writer");
            // one descriptor for the whole test: block 256 + i gets byte i % 251 + 1, then fdatasync
            String writer = String.join("\n",
                    "import os, sys, time",
                    "fd = os.open(sys.argv[1], os.O_WRONLY)",
                    "i = 0",
                    "while not os.path.exists(sys.argv[2]) and i < 4000:",
                    "    os.pwrite(fd, bytes([i % 251 + 1]) * 4096, (256 + i) * 4096)",
                    "    try:",
                    "        os.fdatasync(fd)",
                    "        print(i, 'ok', flush=True)",
                    "    except OSError as e:",
                    "        print(i, 'error', e.errno, flush=True)",
                    "    i += 1",
                    "    time.sleep(0.02)");
            String out;
            try (Proc.Background w = Proc.start("timeout", "180", "python3", "-c", writer, j.toString(), stop.toString())) {
                Poll.until(() -> w.output().contains(" ok"), () -> "the writer's first flush: " + w.output());
                disk.failing(true);
                Poll.until(() -> w.output().contains(" error"), () -> "a flush while the disk fails: " + w.output());
                disk.failing(false);
                int okBefore = count(w.output(), " ok");
                m.awaitLog("fdatasync failed");
                if (byOperator) {
                    Thread.sleep(300);
                    assertEquals(okBefore, count(w.output(), " ok"), "flushes after a failed one keep failing: "
                            + w.output());
                    Proc.Result reopen = m.vmfuse("journal", "reopen", m.mnt.toString());
                    reopen.assertOk();
                    assertTrue(reopen.out().contains("opened again in place; no device lost anything"),
                            reopen.describe());
                } else {
                    // a tick of the timer (every 5 s) while the disk failed refuses the reopen, and the next
                    // is a minute later
                    Poll.until(() -> m.log().contains("a checkpoint found its redo log refusing"),
                            () -> "the daemon reopens the store: " + m.log(), 90);
                }
                Poll.until(() -> count(w.output(), " ok") > okBefore + 5,
                        () -> "the same descriptor's flushes succeed again: " + w.output(), 90);
                assertTrue(writeAndSync(j, 2 * MiB, (int) MiB, 3), "a new open's flush");
                Proc.Result list = m.vmfuse("journal", "list", m.mnt.toString());
                assertTrue(list.out().contains("opened again in place 1 time(s)"), list.describe());
                Files.createFile(stop);
                assertTrue(w.process.waitFor(30, java.util.concurrent.TimeUnit.SECONDS), "the writer ends");
                out = w.output();
            }
            m.umount(); // its final sync reports the write error the store's filesystem met: not asserted
            m.mount();
            assertTrue(holds(j, 0, (int) MiB, 1), "flushed before the disk failed");
            assertTrue(holds(j, 2 * MiB, (int) MiB, 3), "flushed after the reopen");
            StringBuilder flushed = new StringBuilder();
            for (String line : out.split("\n")) {
                if (line.endsWith(" ok")) {
                    flushed.append(line, 0, line.indexOf(' ')).append(' ');
                }
            }
            Proc.Result check = Proc.run("python3", "-c", String.join("\n",
                    "import os, sys",
                    "fd = os.open(sys.argv[1], os.O_RDONLY)",
                    "bad = [i for i in map(int, sys.argv[2].split()) if os.pread(fd, 4096, (256 + i) * 4096) "
                            + "!= bytes([i % 251 + 1]) * 4096]",
                    "print('missing', bad) if bad else print('all there')"), j.toString(), flushed.toString());
            assertEquals("all there", check.out().trim(), "every write whose flush returned: " + check.describe());
            m.umount().assertOk();
        }
    }

    private static int count(String s, String what) {
        int n = 0;
        for (int at = s.indexOf(what); at >= 0; at = s.indexOf(what, at + 1)) {
            n++;
        }
        return n;
    }

    /**
     * A read that meets a disk error part way (its first 64 KiB in the host's page cache, the rest
     * on a disk failing every I/O) fails with EIO, through FUSE and through the NBD door, or ends
     * short of the error through FUSE: never zeros in place of what the disk could not give, with
     * success (found by a review: the image's read ended short at the error, and the page cache
     * and the NBD door took that for the end of the image and filled in zeros).
     */
    @Test
    void aReadThatMeetsADiskErrorPartWayNeverReturnsZerosForWhatFailed() throws Exception {
        try (Mounted m = Mounted.prepare(); NbdDisk disk = NbdDisk.create(m.store, "256M")) {
            Path sock = m.root.resolve("nbd.sock");
            m.mount("--nbd", "unix:" + sock);
            Path img = m.image("r.raw");
            Files.write(img, new byte[0]);
            Disk.writeAndSync(img, 0, 1 << 20, 7).assertOk();
            Proc.ok("sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches");
            Proc.ok("python3", "-c", String.join("\n", // its first 64 KiB only, no readahead
                    "import os, sys",
                    "fd = os.open(sys.argv[1], os.O_RDONLY)",
                    "os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)",
                    "os.pread(fd, 65536, 0)"), m.backing("r.raw").toString());
            disk.failing(true);
            try {
                Proc.Result fuse = Proc.run("python3", "-c", String.join("\n",
                        "import os, sys, random",
                        "random.seed(7)",
                        "want = random.randbytes(131072)",
                        "fd = os.open(sys.argv[1], os.O_RDONLY)",
                        "try:",
                        "    got = os.pread(fd, 131072, 0)",
                        "except OSError as e:",
                        "    print('error', e.errno); sys.exit(0)",
                        "print('read', len(got), 'intact' if got == want[:len(got)] else 'differs')"),
                        img.toString());
                String out = fuse.assertOk().out().trim();
                assertTrue(out.equals("error 5") || (out.startsWith("read ") && out.endsWith(" intact")
                        && !out.equals("read 131072 intact")), "through FUSE: " + out);
                Proc.Result nbd = Proc.run("qemu-io", "-f", "raw", "-r",
                        "nbd+unix:///images/r.raw?socket=" + sock, "-c", "read 0 128k");
                String said = nbd.out() + nbd.err();
                assertTrue(said.contains("read failed"), "through the NBD door: " + nbd.describe());
            } finally {
                disk.failing(false);
            }
        }
    }

    @Test
    void afterAPowerCutOfTheStoreDiskEverythingSyncedIsThere() throws Exception {
        try (Mounted m = Mounted.prepare(); NbdDisk disk = NbdDisk.create(m.store, "256M")) {
            m.mount();
            m.vmfuse("journal", "create", "--size", "16M", "j", m.mnt.toString()).assertOk();
            Path j = m.mnt.resolve("journals/j");
            assertTrue(writeAndSync(j, 0, (int) MiB, 1));
            Proc.ok("qemu-img", "create", "-f", "raw", m.image("a.raw").toString(), "8M");
            assertTrue(writeAndSync(m.image("a.raw"), 0, (int) MiB, 5));
            Proc.ok("mv", m.image("a.raw").toString(), m.image("b.raw").toString());
            Proc.ok("python3", "-c", "import os, sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))",
                    m.mnt.resolve("images").toString());
            assertTrue(writeAndSync(j, MiB, (int) MiB, 2));

            disk.cut(); // the host loses power: the disk keeps what it was given
            m.daemonPid().flatMap(ProcessHandle::of).ifPresent(Proc::kill);
            Proc.run("fusermount", "-u", "-z", m.mnt.toString());
            disk.attachAgain();
            m.mount();

            assertTrue(holds(j, 0, (int) MiB, 1) && holds(j, MiB, (int) MiB, 2), "fdatasynced journal writes");
            assertTrue(Files.exists(m.image("b.raw")), "renamed, then images/ fsynced");
            assertFalse(Files.exists(m.image("a.raw")), "the name it was renamed from");
            assertTrue(holds(m.image("b.raw"), 0, (int) MiB, 5), "the image's fdatasynced data");
            assertEquals(8 * MiB, Files.size(m.image("b.raw")));
            m.umount().assertOk();
        }
    }

    /** A step of work on images/ through the mount; the cut comes after it. */
    private interface Step {
        void run(Mounted m);
    }

    private static void syncImages(Mounted m) {
        Proc.ok("python3", "-c", "import os, sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))",
                m.mnt.resolve("images").toString());
    }

    /**
     * Creates, writes, renames and unlinks of images, with fdatasyncs and fsyncs of images/, and a
     * power cut of the store's disk after each step in turn. After each cut: an image whose data
     * was fdatasynced and whose name's directory was synced since is there, under that name, with
     * that data; a change made after the last fsync of images/ may be there or not, never half
     * (the image is under its old name or its new one).
     */
    @Test
    void anImageCreatedOrRenamedThenItsDirectorySyncedSurvivesAPowerCutAfterAnyStep() throws Exception {
        Step[] steps = {
            m -> Proc.ok("qemu-img", "create", "-f", "raw", m.image("a.raw").toString(), "4M"),
            m -> assertTrue(writeAndSync(m.image("a.raw"), 0, (int) MiB, 1)),
            StoreDiskFaultTest::syncImages, // a.raw is durable
            m -> Proc.ok("mv", m.image("a.raw").toString(), m.image("b.raw").toString()),
            m -> {
                Proc.ok("qemu-img", "create", "-f", "raw", m.image("c.raw").toString(), "4M");
                assertTrue(writeAndSync(m.image("c.raw"), 0, (int) MiB, 2));
            },
            StoreDiskFaultTest::syncImages, // b.raw and c.raw are durable, a.raw is gone
            m -> Proc.ok("rm", m.image("c.raw").toString()),
            m -> {
                Proc.ok("mv", m.image("b.raw").toString(), m.image("d.raw").toString());
                syncImages(m); // d.raw is durable, b.raw and c.raw gone
            },
        };
        for (int cutAfter = 1; cutAfter <= steps.length; cutAfter++) {
            try (Mounted m = Mounted.prepare(); NbdDisk disk = NbdDisk.create(m.store, "64M")) {
                m.mount();
                for (int i = 0; i < cutAfter; i++) {
                    steps[i].run(m);
                }
                disk.cut();
                m.daemonPid().flatMap(ProcessHandle::of).ifPresent(Proc::kill);
                Proc.run("fusermount", "-u", "-z", m.mnt.toString());
                disk.attachAgain();
                m.mount();
                String at = "power cut after step " + cutAfter + ": ";
                boolean a = Files.exists(m.image("a.raw"));
                boolean b = Files.exists(m.image("b.raw"));
                boolean c = Files.exists(m.image("c.raw"));
                boolean d = Files.exists(m.image("d.raw"));
                if (cutAfter >= 3 && cutAfter < 6) {
                    assertTrue(a ^ b, at + "the synced image, under its old name or its new one (a " + a + ", b " + b + ")");
                    assertTrue(holds(m.image(a ? "a.raw" : "b.raw"), 0, (int) MiB, 1), at + "its fdatasynced data");
                }
                if (cutAfter >= 6 && cutAfter < 8) {
                    assertTrue(b && !a, at + "b.raw, renamed from a.raw, then images/ synced");
                    assertTrue(holds(m.image("b.raw"), 0, (int) MiB, 1), at + "b.raw's data");
                    if (c) {
                        assertTrue(holds(m.image("c.raw"), 0, (int) MiB, 2), at + "c.raw's data, if its unlink was lost");
                    }
                    assertTrue(cutAfter == 7 || c, at + "c.raw, created and synced");
                }
                if (cutAfter == 8) {
                    assertTrue(d && !a && !b && !c, at + "only d.raw (a " + a + ", b " + b + ", c " + c + ", d " + d + ")");
                    assertTrue(holds(m.image("d.raw"), 0, (int) MiB, 1), at + "d.raw's data");
                }
                m.umount().assertOk();
            }
        }
    }
}
