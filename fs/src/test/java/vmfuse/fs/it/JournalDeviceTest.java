package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** Journal devices as files under journals/: sparse, an ext4 external journal, durable as promised. */
@Tag("integration")
class JournalDeviceTest {
    static final long MiB = 1 << 20;

    private static long blocks(Path p) {
        return Long.parseLong(Proc.ok("stat", "-c", "%b", p.toString()).out().trim()) * 512;
    }

    /** Writes {@code len} random bytes at {@code off} and fdatasyncs; returns their sha256. */
    private static String writeAndSync(Path p, long off, int len, int seed) {
        return Disk.writeAndSync(p, off, len, seed).assertOk().out().trim();
    }

    @Test
    void aDeviceMadeWithTruncateIsSparseAndUnlinkFreesItsBlocks() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path j1 = m.mnt.resolve("journals/j1");
            Path j2 = m.mnt.resolve("journals/j2");
            Proc.ok("truncate", "-s", "128M", j1.toString());
            Proc.ok("truncate", "-s", "64M", j2.toString());
            assertEquals(128 * MiB, Files.size(j1));
            assertEquals(0, blocks(j1), "nothing stored until written");
            try (var s = Files.list(m.mnt.resolve("journals"))) {
                assertEquals(List.of("j1", "j2"), s.map(p -> p.getFileName().toString()).sorted().toList());
            }
            String sum = writeAndSync(j1, 5 * MiB, (int) MiB, 1);
            writeAndSync(j2, 0, 256 * 1024, 2);
            assertEquals(MiB, blocks(j1));
            assertEquals(sum, Disk.readSha(j1, 5 * MiB, (int) MiB));
            assertEquals(128 * MiB, Files.size(j1), "writes inside the device keep its size");

            Proc.ok("fallocate", "-p", "-o", String.valueOf(5 * MiB), "-l", String.valueOf(MiB / 2), j1.toString());
            assertEquals(MiB / 2, blocks(j1), "a punch frees the device's blocks");

            Proc.ok("dd", "if=/dev/urandom", "of=" + j1, "bs=1M", "count=32", "seek=8", "conv=notrunc,fsync",
                    "status=none");
            // the store's files: MapDB's (the devices' trees) and the blocks file (their blocks)
            Path db = m.store.resolve("journals.db");
            Path slots = m.store.resolve("journals.db.blocks");
            long deadline = System.nanoTime() + 30_000_000_000L;
            while (blocks(db) + blocks(slots) < 32 * MiB && System.nanoTime() < deadline) {
                Thread.sleep(200); // until a checkpoint (every 5 s) moved the blocks into the store's files
            }
            long full = blocks(db) + blocks(slots);
            assertTrue(full >= 32 * MiB, "store files " + full);
            Files.delete(j1);
            assertFalse(Files.exists(j1));
            assertEquals(256 * 1024, blocks(j2), "the other device keeps its blocks");
            long after = blocks(db) + blocks(slots);
            assertTrue(after < 4 * MiB, "store files after the unlink: " + full + " -> " + after);
            m.awaitLog("release image=journals/j1");
        }
    }

    @Test
    void ext4UsesAJournalDeviceAsItsExternalJournalAndFsckIsClean() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path data = m.image("data.raw");
            Path journal = m.mnt.resolve("journals/ext4j");
            Proc.ok("truncate", "-s", "256M", data.toString());
            Proc.ok("truncate", "-s", "32M", journal.toString());
            List<String> loops = new ArrayList<>();
            Path fsmnt = m.root.resolve("ext4");
            Files.createDirectories(fsmnt);
            try {
                String jloop = Proc.ok("losetup", "-f", "--show", journal.toString()).out().trim();
                loops.add(jloop);
                String dloop = Proc.ok("losetup", "-f", "--show", data.toString()).out().trim();
                loops.add(dloop);
                Proc.ok("mke2fs", "-q", "-O", "journal_dev", "-b", "4096", jloop);
                Proc.ok("mkfs.ext4", "-q", "-F", "-b", "4096", "-J", "device=" + jloop, dloop);
                Proc.ok("mount", "-o", "journal_path=" + jloop, dloop, fsmnt.toString());
                try {
                    Proc.run(Duration.ofSeconds(300), "sh", "-c", "cd '" + fsmnt + "' && for i in $(seq 1 2000); do "
                            + "echo file $i > f$i; done && mkdir d && cp -r /usr/share/doc/e2fsprogs d/ && sync")
                            .assertOk();
                } finally {
                    Proc.ok("umount", fsmnt.toString());
                }
                Proc.ok("e2fsck", "-fn", "-j", jloop, dloop);
                String dump = Proc.ok("dumpe2fs", "-h", dloop).out();
                assertTrue(dump.contains("Journal device:"), dump);
                assertTrue(blocks(journal) > 0, "the journal device holds the journal's blocks");
                assertTrue(blocks(journal) < 32 * MiB, "and stays sparse");
            } finally {
                Proc.run("umount", "-l", fsmnt.toString());
                for (String l : loops) {
                    Proc.run("losetup", "-d", l);
                }
            }
        }
    }

    @Test
    void flushedDataSurviveAKillOfTheDaemon() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path j = m.mnt.resolve("journals/crash");
            Proc.ok("truncate", "-s", "64M", j.toString());
            String sum = writeAndSync(j, 3 * MiB + 512, 700_000, 3);
            long pid = m.daemonPid().orElseThrow();
            ProcessHandle.of(pid).ifPresent(Proc::kill); // kill -9, right after the fdatasync returned
            m.mount("--force");
            assertEquals(64 * MiB, Files.size(j));
            assertEquals(sum, Disk.readSha(j, 3 * MiB + 512, 700_000));
        }
    }

    /**
     * A journal store that cannot be opened (its file corrupt) no longer fails the mount, which
     * stopped every VM's image with it: the images are served, the journal devices are not (the
     * reason under `vmfuse journal list`), and once the file is mended `vmfuse journal reopen`
     * serves them, with what was flushed.
     */
    @Test
    void aJournalStoreThatCannotBeOpenedLeavesTheImagesServedUntilItIsMended() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path j = m.mnt.resolve("journals/j");
            Proc.ok("truncate", "-s", "16M", j.toString());
            String sum = writeAndSync(j, MiB, 300_000, 5);
            Path img = m.image("a.raw");
            Proc.ok("truncate", "-s", "16M", img.toString());
            String imgSum = writeAndSync(img, 0, 300_000, 6);
            m.umount().assertOk();
            Path file = m.store.resolve("journals.db");
            Path copy = m.root.resolve("journals.db.copy");
            Files.copy(file, copy);
            byte[] bad = Files.readAllBytes(file);
            java.util.Arrays.fill(bad, 0, 4096, (byte) 0x5a);
            Files.write(file, bad);

            m.mount();
            m.awaitLog("cannot be opened");
            assertEquals(imgSum, Disk.readSha(img, 0, 300_000), "the image is served");
            writeAndSync(img, MiB, 4096, 7);
            assertFalse(Files.exists(j), "no journal device is served");
            Proc.Result list = m.vmfuse("journal", "list", m.mnt.toString());
            assertTrue(list.out().contains("BROKEN: journal store " + file + " cannot be opened"), list.describe());
            assertEquals(1, m.vmfuse("journal", "reopen", m.mnt.toString()).exit(), "still corrupt");

            Files.copy(copy, file, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            Proc.Result reopen = m.vmfuse("journal", "reopen", m.mnt.toString());
            reopen.assertOk();
            assertEquals(sum, Disk.readSha(j, MiB, 300_000), "flushed before the store broke");
            writeAndSync(j, 2 * MiB, 4096, 8);
            m.umount().assertOk();
        }
    }

    /**
     * The store's disk fills while a guest writes its journal: the writer gets ENOSPC, what was
     * flushed before reads back, and once space is freed writes go on and a restart keeps it all.
     */
    @Test
    void aFullStoreDiskGivesTheWriterEnospcAndLosesNothing() throws Exception {
        try (Mounted m = Mounted.onTmpfs("160m", "--journal-memory", "16M")) {
            Path j = m.mnt.resolve("journals/j");
            Proc.ok("truncate", "-s", "1G", j.toString());
            String before = writeAndSync(j, 0, 1 << 20, 7);
            Path filler = m.store.resolve("filler");
            Proc.Result fill = Proc.run(Duration.ofSeconds(60), "dd", "if=/dev/zero", "of=" + filler, "bs=1M",
                    "status=none");
            assertFalse(fill.ok(), "the filler fills the store's disk");

            Proc.Result w = Proc.run(Duration.ofSeconds(120), "python3", "-c", String.join("\n",
                    "import os, sys, errno",
                    "fd = os.open(sys.argv[1], os.O_WRONLY)",
                    "chunk = os.urandom(1 << 20)",
                    "for i in range(512):",
                    "    try:",
                    "        os.pwrite(fd, chunk, (16 + i) << 20)",
                    "        if i % 4 == 3: os.fdatasync(fd)",
                    "    except OSError as e:",
                    "        print(errno.errorcode[e.errno], i); sys.exit(0)",
                    "print('no error after 512 MiB')"), j.toString());
            assertTrue(w.out().startsWith("ENOSPC "), w.describe());
            assertEquals(before, Disk.readSha(j, 0, 1 << 20), "what was flushed before the disk filled");
            m.awaitLog("errno=28"); // the redo log or a checkpoint found the disk full

            Files.delete(filler);
            String after = writeAndSync(j, 2 << 20, 1 << 20, 8);
            m.umount().assertOk();
            m.mount();
            assertEquals(1L << 30, Files.size(j));
            assertEquals(before, Disk.readSha(j, 0, 1 << 20));
            assertEquals(after, Disk.readSha(j, 2 << 20, 1 << 20));
        }
    }

    @Test
    void closeModeContentsSurviveACleanUnmount() throws Exception {
        try (Mounted m = Mounted.prepare()) {
            m.mount("--journal-durability", "close");
            Path j = m.mnt.resolve("journals/fast");
            Proc.ok("truncate", "-s", "16M", j.toString());
            Proc.ok("dd", "if=/dev/urandom", "of=" + j, "bs=64k", "count=40", "seek=3", "conv=notrunc", "status=none");
            String sum = Disk.readSha(j, 3 * 65536, 40 * 65536);
            m.umount().assertOk();
            m.mount();
            assertEquals(16 * MiB, Files.size(j));
            assertEquals(sum, Disk.readSha(j, 3 * 65536, 40 * 65536));
        }
    }

    /**
     * journal checkpoint and umount show what the checkpoint wrote on a terminal (a pty, as
     * script(1) gives one) and nothing in a pipe; umount on a terminal has the daemon checkpoint
     * first. The daemon's timer is held off (a test's interval of an hour), so the blocks written
     * are still in memory when each command comes: a device in flush mode keeps them there (and
     * in its redo log) until a checkpoint, when closed too, up to a redo log segment's worth.
     */
    @Test
    void aCheckpointShowsWhatItWroteOnATerminalOnlyAndUmountCheckpointsFirst() throws Exception {
        try (Mounted m = Mounted.prepare()) {
            m.mountWithProperty("vmfuse.test.checkpointSeconds=3600");
            Path j = m.mnt.resolve("journals/big");
            Proc.ok("truncate", "-s", "256M", j.toString());
            Proc.ok("dd", "if=/dev/urandom", "of=" + j, "bs=1M", "count=16", "conv=notrunc", "status=none");
            String held = m.vmfuse("journal", "list", m.mnt.toString()).assertOk().out();
            assertTrue(held.contains("blocks in memory: 16.0 MiB"), held);

            Proc.Result piped = m.vmfuse("journal", "checkpoint", m.mnt.toString()).assertOk();
            assertEquals("", piped.out() + piped.err(), "nothing in a pipe");
            String list = m.vmfuse("journal", "list", m.mnt.toString()).assertOk().out();
            assertTrue(list.contains("blocks in memory: 0.0 MiB") && list.contains("; " + (checkpoints(held) + 1)
                    + " checkpoints since mount"), held + list);

            Proc.ok("dd", "if=/dev/urandom", "of=" + j, "bs=1M", "count=20", "seek=64", "conv=notrunc", "status=none");
            String sum = Disk.readSha(j, 0, 84 << 20);
            Proc.Result tty = Proc.run(Duration.ofSeconds(90), "script", "-qec",
                    Mounted.VMFUSE + " journal checkpoint " + m.mnt, "/dev/null");
            assertEquals(0, tty.exit(), tty.describe());
            assertTrue(tty.out().contains("journal checkpoint: wrote 20.0 of 20.0 MiB"), tty.describe());

            Proc.ok("dd", "if=/dev/urandom", "of=" + j, "bs=1M", "count=12", "seek=160", "conv=notrunc", "status=none");
            String sum2 = Disk.readSha(j, 160L << 20, 12 << 20);
            tty = Proc.run(Duration.ofSeconds(90), "script", "-qec", Mounted.VMFUSE + " umount " + m.mnt, "/dev/null");
            assertEquals(0, tty.exit(), tty.describe() + m.log());
            m.mounted = false;
            assertTrue(tty.out().contains("journal checkpoint: wrote 12.0 of 12.0 MiB"), tty.describe());
            m.mount();
            assertEquals(sum, Disk.readSha(j, 0, 84 << 20));
            assertEquals(sum2, Disk.readSha(j, 160L << 20, 12 << 20));
        }
    }

    /** The checkpoints since mount that journal list's footer says. */
    private static long checkpoints(String list) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("; (\\d+) checkpoints since mount").matcher(list);
        assertTrue(m.find(), list);
        return Long.parseLong(m.group(1));
    }

    @Test
    void journalCreateAndListFromTheCommandLine() throws Exception {
        try (Mounted m = Mounted.create()) {
            m.vmfuse("journal", "create", "--size", "128M", "vm1", m.mnt.toString()).assertOk();
            m.vmfuse("journal", "create", "--size", "64M", "--durability", "close", "vm2", m.mnt.toString()).assertOk();
            assertEquals(128 * MiB, Files.size(m.mnt.resolve("journals/vm1")));
            writeAndSync(m.mnt.resolve("journals/vm1"), 0, 65536, 4);
            String list = m.vmfuse("journal", "list", m.mnt.toString()).assertOk().out();
            List<String> rows = list.lines().map(l -> l.replaceAll(" +", " ")).toList();
            assertEquals("NAME SIZE STORED MEMORY DURABILITY LAST FLUSH", rows.get(0), list);
            assertTrue(rows.get(1).matches("vm1 134217728 65536 \\d+ flush 20.*"), list);
            assertEquals("vm2 67108864 0 4096 close never", rows.get(2), list);
            assertTrue(rows.get(3).matches("blocks in memory: [0-9.]+ MiB of 128.0 MiB \\(--journal-memory; [0-9.]+ MiB "
                    + "allocated outside the heap\\); store on disk: [0-9.]+ MiB; \\d+ checkpoints since mount"), list);

            for (String[] bad : new String[][] {{"--size", "12X", "x"}, {"--size", "1M", "../x"}, {"--size", "1M", "vm1"},
                {"--size", "1M", "--durability", "sometimes", "y"}, {"--size", "9E", "z"},
                {"--size", "1P", "w"}}) { // 1P: its index could take more heap than the devices may reserve
                List<String> args = new ArrayList<>(List.of("journal", "create"));
                args.addAll(List.of(bad));
                args.add(m.mnt.toString());
                Proc.Result r = m.vmfuse(args.toArray(String[]::new));
                assertEquals(1, r.exit(), r.describe());
                assertTrue(r.err().startsWith("vmfuse: "), r.describe());
                assertEquals(1, r.err().strip().lines().count(), r.describe());
            }
            try (var s = Files.list(m.mnt.resolve("journals"))) {
                assertEquals(List.of("vm1", "vm2"), s.map(p -> p.getFileName().toString()).sorted().toList());
            }
        }
    }
}
