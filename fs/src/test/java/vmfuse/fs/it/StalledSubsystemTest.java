package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * A subsystem that stalls never takes the FUSE threads that serve everything else: requests
 * that wait on it park, and the daemon lends threads meanwhile, up to its bound.
 */
@Tag("integration")
class StalledSubsystemTest {
    static final int MiB = 1 << 20;
    static final int WRITERS = 24; // more than the daemon's 16 FUSE threads

    /**
     * The journal store (journals.db, on a disk that hangs) is at its memory bound and its
     * checkpoint cannot finish: 24 writers, each of its own journal device (the kernel lets one
     * buffered write into a FUSE file at a time), wait for memory. The images
     * (on a disk of their own) are still read and written, at once; when the disk comes back,
     * every journal write completes, whole.
     */
    @Test
    void aJournalStoreStalledAtItsMemoryBoundLeavesImagesServed() throws Exception {
        try (Mounted m = Mounted.prepare(); NbdDisk disk = NbdDisk.create(m.store, "256M")) {
            Path images = m.store.resolve("images");
            Disk.tmpfs(images, "64m"); // the images' own disk: only the journal store's hangs
            List<Proc.Background> writers = new ArrayList<>();
            try {
                m.mount("--journal-memory", "4M", "--journal-durability", "close");
                for (int i = 0; i < WRITERS; i++) {
                    Proc.ok("truncate", "-s", "2M", m.mnt.resolve("journals/j" + i).toString());
                }
                Path img = m.image("a.raw");
                Proc.ok("qemu-img", "create", "-f", "raw", img.toString(), "16M");
                long pid = m.daemonPid().orElseThrow();

                disk.stalled(true);
                for (int i = 0; i < WRITERS; i++) {
                    // 2 MiB each, from a seeded generator: more than the store may hold in memory
                    writers.add(Proc.start("python3", "-c", String.join("\n",
                            "import os, sys, random",
                            "random.seed(int(sys.argv[2]))",
                            "fd = os.open(sys.argv[1], os.O_WRONLY)",
                            "os.pwrite(fd, random.randbytes(2 << 20), 0)",
                            "print('written')"), m.mnt.resolve("journals/j" + i).toString(), String.valueOf(i)));
                }
                // as many requests wait in the journal store as the daemon has FUSE threads
                Poll.until(() -> inJournalStore(pid) >= 16, () -> "requests waiting in the journal store: "
                        + inJournalStore(pid) + "\n" + fuseStacks(pid) + Proc.tail(m.log()));

                for (int round = 0; round < 10; round++) {
                    Proc.Result r = Proc.run(Duration.ofSeconds(20), List.of("qemu-io", "-f", "raw",
                            "-c", "write -P " + (round + 1) + " 0 64k", "-c", "read -P " + (round + 1) + " 0 64k",
                            img.toString()));
                    assertTrue(r.ok(), "an image is served while the journal store stalls:\n" + r.describe()
                            + "\n" + threadDump(pid));
                }
                Proc.ok("qemu-img", "create", "-f", "qcow2", m.image("new.qcow2").toString(), "1G");
                assertTrue(fuseThreads(pid) > 16, "threads lent while requests wait: " + fuseThreads(pid));

                disk.stalled(false);
                for (Proc.Background w : writers) {
                    assertTrue(w.process.waitFor(120, java.util.concurrent.TimeUnit.SECONDS), w.output());
                    assertEquals(0, w.process.exitValue(), w.output());
                }
                for (int i = 0; i < WRITERS; i++) {
                    String expected = Proc.ok("python3", "-c", String.join("\n",
                            "import sys, random, hashlib",
                            "random.seed(int(sys.argv[1]))",
                            "print(hashlib.sha256(random.randbytes(2 << 20)).hexdigest())"),
                            String.valueOf(i)).out().trim();
                    assertEquals(expected, Disk.readSha(m.mnt.resolve("journals/j" + i), 0, 2 * MiB), "writer " + i);
                }
                assertTrue(m.umount().ok(), m.log());
            } finally {
                disk.stalled(false);
                writers.forEach(Proc.Background::close);
                if (Files.exists(m.mnt.resolve("images"))) {
                    m.umount();
                }
                Disk.umount(images);
            }
        }
    }

    private static String threadDump(long pid) {
        return Proc.run(Duration.ofSeconds(30), List.of("jcmd", String.valueOf(pid), "Thread.print")).out();
    }

    /** FUSE threads of the daemon inside the journal store (waiting on it: its disk is stopped). */
    private static int inJournalStore(long pid) {
        int n = 0;
        for (String t : threadDump(pid).split("\n\n")) {
            if (t.startsWith("\"fuse-") && t.contains("at vmfuse.journal.")) {
                n++;
            }
        }
        return n;
    }

    /** The top frames of each FUSE thread and of the checkpoint's. */
    private static String fuseStacks(long pid) {
        StringBuilder b = new StringBuilder();
        for (String t : threadDump(pid).split("\n\n")) {
            if (t.startsWith("\"fuse-") || t.contains("checkpoint")) {
                t.lines().limit(8).forEach(l -> b.append(l).append('\n'));
            }
        }
        return b.toString();
    }

    private static int fuseThreads(long pid) {
        int n = 0;
        for (String t : threadDump(pid).split("\n\n")) {
            if (t.startsWith("\"fuse-")) {
                n++;
            }
        }
        return n;
    }
}
