package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** The command line as an operator drives it: mount, status, umount, signals, stale mounts. */
@Tag("integration")
class MountLifecycleTest {

    private static boolean isMounted(Mounted m) {
        return Proc.run("mountpoint", "-q", m.mnt.toString()).ok();
    }

    @Test
    void everyCommandHasHelp() throws Exception {
        try (Mounted m = Mounted.prepare()) {
            for (String[] args : new String[][] {{"--help"}, {"mount", "--help"}, {"umount", "--help"},
                {"status", "--help"}, {"journal", "create", "--help"}, {"journal", "list", "--help"},
                {"vm", "add", "--help"}, {"vm", "remove", "--help"}, {"vm", "reclaim", "--help"}}) {
                Proc.Result r = m.vmfuse(args).assertOk();
                assertTrue(r.out().contains("Usage: vmfuse"), r.describe());
            }
            // the descriptions' lines as written, not re-wrapped at 80 columns
            assertTrue(m.vmfuse("vm", "add", "--help").out().contains(
                    "\nlog its deletion notices durably and punch what it deleted in its image, never what it wrote since.\n"));
            Proc.Result bad = m.vmfuse("mount", "--no-such-option");
            assertEquals(2, bad.exit(), bad.describe());
            Proc.Result few = m.vmfuse("mount", "--store", m.store.toString(), "--reclaim-max-ranges", "3",
                    m.root.resolve("elsewhere").toString());
            assertEquals(2, few.exit(), few.describe());
            assertTrue(few.err().contains("--reclaim-max-ranges must be 16..10000000, not 3"), few.describe());
        }
    }

    @Test
    void mountReturnsOnceLiveAndUmountWaitsForTheDaemon() throws Exception {
        try (Mounted m = Mounted.create()) {
            assertTrue(isMounted(m));
            assertTrue(Files.isDirectory(m.mnt.resolve("images")));
            assertTrue(Files.isDirectory(m.mnt.resolve("journals")));
            long pid = m.daemonPid().orElseThrow();
            m.awaitLog("mounted store=" + m.store);
            Proc.ok("qemu-img", "create", "-f", "qcow2", m.image("a.qcow2").toString(), "1G");

            m.umount().assertOk();
            assertFalse(isMounted(m));
            assertFalse(ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false), "daemon still running");
            m.awaitLog("unmounted store=");
            assertTrue(Files.exists(m.backing("a.qcow2")));
            assertFalse(Files.exists(m.store.resolve("vmfuse.pid")));
        }
    }

    @Test
    void umountOfABusyMountFailsAndLeavesItWorking() throws Exception {
        try (Mounted m = Mounted.create()) {
            Proc.ok("qemu-img", "create", "-f", "raw", m.image("busy.raw").toString(), "1M");
            try (Proc.Background holder = Proc.start("sh", "-c", "exec 3<'" + m.image("busy.raw") + "'; echo open; exec sleep 60")) {
                Poll.until(() -> holder.output().contains("open"), () -> "the holder opens the image: " + holder.output());
                Proc.Result r = m.vmfuse("umount", m.mnt.toString());
                assertEquals(1, r.exit(), r.describe());
                assertTrue(r.err().startsWith("vmfuse: cannot unmount " + m.mnt), r.describe());
                assertTrue(r.err().contains("busy"), r.describe());
                assertEquals(1, r.err().lines().count(), "one line: " + r.err());
                assertTrue(isMounted(m));
                assertTrue(Files.exists(m.image("busy.raw")));
            }
        }
    }

    @Test
    void sigtermAndSigintUnmountCleanly() throws Exception {
        for (String signal : new String[] {"TERM", "INT"}) {
            try (Mounted m = Mounted.create()) {
                Proc.ok("qemu-img", "create", "-f", "raw", m.image("s.raw").toString(), "1M");
                long pid = m.daemonPid().orElseThrow();
                Proc.ok("kill", "-" + signal, String.valueOf(pid));
                ProcessHandle.of(pid).ifPresent(h -> {
                    try {
                        h.onExit().get(30, TimeUnit.SECONDS);
                    } catch (Exception e) {
                        throw new AssertionError("daemon did not exit on SIG" + signal, e);
                    }
                });
                assertFalse(isMounted(m), "still mounted after SIG" + signal);
                m.awaitLog("unmounted store=");
                assertTrue(Files.exists(m.backing("s.raw")));
            }
        }
    }

    /**
     * SIGTERM while a process still has an image and a close-mode journal device open: the
     * unmount is lazy and the FUSE loop does not end, yet the daemon commits its journal devices,
     * syncs the store and records the unmount before it exits. (A review found it exiting after
     * 30 s with none of that: what was written to the device since its last checkpoint was lost.)
     */
    @Test
    void sigtermWithFilesStillOpenCommitsTheJournalDevicesBeforeExiting() throws Exception {
        try (Mounted m = Mounted.prepare()) {
            m.mountWithProperty("vmfuse.test.checkpointSeconds=3600", "--journal-durability", "close");
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("busy.raw").toString(), "1M");
            Path j = m.mnt.resolve("journals/j");
            Proc.ok("truncate", "-s", "64M", j.toString());
            long pid = m.daemonPid().orElseThrow();
            try (Proc.Background holder = Proc.start("python3", "-c", String.join("\n",
                    "import hashlib, os, sys, time",
                    "img = open(sys.argv[1], 'rb')",
                    "dev = os.open(sys.argv[2], os.O_RDWR)",
                    "data = os.urandom(8 << 20)",
                    "os.pwrite(dev, data, 1 << 20)",
                    "print(hashlib.sha256(data).hexdigest(), flush=True)",
                    "time.sleep(600)"), m.image("busy.raw").toString(), j.toString())) {
                Poll.until(() -> holder.output().strip().length() == 64, holder::output);
                String sum = holder.output().strip();
                Proc.ok("kill", "-TERM", String.valueOf(pid));
                ProcessHandle.of(pid).ifPresent(h -> {
                    try {
                        h.onExit().get(120, TimeUnit.SECONDS);
                    } catch (Exception e) {
                        throw new AssertionError("daemon did not exit on SIGTERM", e);
                    }
                });
                String log = Files.readString(m.store.resolve("vmfuse.log"));
                assertTrue(log.contains("unmounted store="), log);
                holder.close();
                Poll.until(() -> !isMounted(m), () -> "the lazily detached mount goes with its last holder");
                m.mounted = false;
                m.mount();
                assertEquals(sum, Disk.readSha(j, 1 << 20, 8 << 20), "what was written to the device is there");
            }
        }
    }

    @Test
    void staleMountIsNamedWithItsFixAndForceClearsIt() throws Exception {
        try (Mounted m = Mounted.create()) {
            Proc.ok("qemu-img", "create", "-f", "raw", m.image("keep.raw").toString(), "1M");
            long pid = m.daemonPid().orElseThrow();
            ProcessHandle.of(pid).ifPresent(Proc::kill); // kill -9: the mount is left behind, stale

            Proc.Result again = m.vmfuse("mount", "--store", m.store.toString(), m.mnt.toString());
            assertEquals(1, again.exit(), again.describe());
            assertTrue(again.err().contains("stale"), again.describe());
            assertTrue(again.err().contains("fusermount -u " + m.mnt), again.describe());
            assertTrue(again.err().contains("--force"), again.describe());

            Proc.Result status = m.vmfuse("status", m.mnt.toString());
            assertEquals(1, status.exit());
            assertTrue(status.err().contains("stale"), status.describe());

            m.mount("--force");
            assertTrue(Files.exists(m.image("keep.raw")), "the image is there after the remount");
        }
    }

    @Test
    void statusShowsEveryImageAndReleasesSurviveARemount() throws Exception {
        try (Mounted m = Mounted.create()) {
            Proc.ok("qemu-img", "create", "-f", "raw", m.image("s1.raw").toString(), "8M");
            Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 1 0 4M", "-c", "discard 0 1M", m.image("s1.raw").toString());
            Proc.ok("qemu-img", "create", "-f", "qcow2", m.image("s2.qcow2").toString(), "1G");
            String status = m.vmfuse("status", m.mnt.toString()).assertOk().out();
            assertTrue(status.contains("IMAGE"), status);
            String s1 = status.lines().filter(l -> l.startsWith("s1.raw")).findFirst().orElseThrow();
            assertEquals("s1.raw 8388608 3145728 1048576 1 0", s1.replaceAll(" +", " "), status);
            assertTrue(status.lines().anyMatch(l -> l.startsWith("s2.qcow2")), status);

            m.umount().assertOk();
            m.mount();
            String after = m.vmfuse("status", m.mnt.toString()).assertOk().out();
            assertTrue(after.lines().anyMatch(l -> l.replaceAll(" +", " ").equals("s1.raw 8388608 3145728 1048576 1 0")),
                    after);
            String human = m.vmfuse("status", "-H", m.mnt.toString()).assertOk().out();
            assertTrue(human.contains("8.0M"), human);
        }
    }
}
