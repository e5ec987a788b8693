package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** Bad input gets a clear one-line error and loses nothing. */
@Tag("integration")
class BadInputTest {

    /** vmfuse failed with exit 1 and one line "vmfuse: ..." that contains every fragment. */
    private static void assertOneLineError(Proc.Result r, String... fragments) {
        assertEquals(1, r.exit(), r.describe());
        String err = r.err().strip();
        assertEquals(1, err.lines().count(), "one line on stderr:\n" + r.err());
        assertTrue(err.startsWith("vmfuse: "), err);
        for (String f : fragments) {
            assertTrue(err.contains(f), "'" + f + "' missing from: " + err);
        }
    }

    private static boolean isMounted(Path p) {
        return Proc.run("mountpoint", "-q", p.toString()).ok();
    }

    @Test
    void storeThatDoesNotExistIsNamed() throws Exception {
        try (Mounted m = Mounted.prepare()) {
            Path missing = m.root.resolve("no-such-store");
            assertOneLineError(m.vmfuse("mount", "--store", missing.toString(), m.mnt.toString()),
                    missing.toString(), "does not exist");
            assertFalse(Files.exists(missing), "a mistyped store must not be created");
            assertFalse(isMounted(m.mnt));
        }
    }

    @Test
    void storeThatIsAFileOrReadOnlyIsRefused() throws Exception {
        try (Mounted m = Mounted.prepare()) {
            Path file = m.root.resolve("file");
            Files.writeString(file, "x");
            assertOneLineError(m.vmfuse("mount", "--store", file.toString(), m.mnt.toString()), "not a directory");

            Path ro = m.root.resolve("ro");
            Disk.tmpfs(ro, "1m", "ro");
            try {
                assertOneLineError(m.vmfuse("mount", "--store", ro.toString(), m.mnt.toString()),
                        ro.toString(), "not writable", "Read-only file system");
            } finally {
                Disk.umount(ro);
            }
            Path comma = m.root.resolve("a,b");
            Files.createDirectories(comma);
            assertOneLineError(m.vmfuse("mount", "--store", comma.toString(), m.mnt.toString()), "','");
            assertFalse(isMounted(m.mnt));
        }
    }

    @Test
    void mountpointMissingNotADirectoryNotEmptyOrBusyIsRefused() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path other = m.root.resolve("store2");
            Files.createDirectories(other);
            Path missing = m.root.resolve("nope");
            assertOneLineError(m.vmfuse("mount", "--store", other.toString(), missing.toString()), "does not exist");

            Path file = m.root.resolve("file");
            Files.writeString(file, "x");
            assertOneLineError(m.vmfuse("mount", "--store", other.toString(), file.toString()), "not a directory");

            Path full = m.root.resolve("full");
            Files.createDirectories(full);
            Files.writeString(full.resolve("precious"), "keep");
            assertOneLineError(m.vmfuse("mount", "--store", other.toString(), full.toString()), "not empty");
            assertEquals("keep", Files.readString(full.resolve("precious")));

            // the mount point is busy: the running mount of m
            assertOneLineError(m.vmfuse("mount", "--store", other.toString(), m.mnt.toString()), "busy", "already mounted");
            // the store is busy: served by m's daemon
            Path mnt2 = m.root.resolve("mnt2");
            Files.createDirectories(mnt2);
            assertOneLineError(m.vmfuse("mount", "--store", m.store.toString(), mnt2.toString()),
                    "in use by another vmfuse daemon", "pid " + m.daemonPid().orElseThrow());
            assertFalse(isMounted(mnt2));
            assertTrue(isMounted(m.mnt), "the running mount is untouched");
        }
    }

    @Test
    void namesOutsideTheNamespaceAreRefused() throws Exception {
        try (Mounted m = Mounted.create()) {
            // folders live in images/ (FoldersTest); the top of the mount is fixed
            Proc.Result mkdir = Proc.run("mkdir", m.mnt.resolve("sub").toString());
            assertFalse(mkdir.ok());
            assertTrue(mkdir.err().contains("Operation not permitted"), mkdir.describe());
            assertFalse(Proc.run("touch", m.mnt.resolve("top-level-file").toString()).ok());
            assertFalse(Proc.run("ln", "-s", "/etc/passwd", m.mnt.resolve("images/link").toString()).ok());
            assertFalse(Proc.run("mkdir", m.mnt.resolve("journals/sub").toString()).ok());

            // a symlink planted in the backing directory is neither shown nor followed
            Path secret = m.root.resolve("secret");
            Files.writeString(secret, "outside the store");
            Files.createSymbolicLink(m.backing("evil.raw"), secret);
            assertFalse(Files.exists(m.image("evil.raw")));
            assertFalse(Proc.run("sh", "-c", "echo x > '" + m.image("evil.raw") + "'").ok());
            assertEquals("outside the store", Files.readString(secret));

            // ".." is resolved by the kernel before a request reaches vmfuse: within the mount it
            // leads to the mount's own directories (Node refuses ".." itself; see NodeTest)
            Proc.ok("qemu-img", "create", "-f", "raw", m.image("a.raw").toString(), "1M");
            assertTrue(Files.exists(m.mnt.resolve("images/../images/a.raw")));
            assertFalse(Files.exists(m.mnt.resolve("images/../a.raw")));
        }
    }

    /**
     * A POSIX name may hold a tab or a newline. They once split the lines of releases.tsv (the
     * store then refused to mount: "corrupt release ledger"), broke `vmfuse status` for every
     * image, and hid a journal device from `journal list`.
     */
    @Test
    void namesWithTabsAndNewlinesAreListedEscapedAndTheStoreMountsAgain() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path tab = m.image("a\tb.raw");
            Path newline = m.image("c\nd.raw");
            Proc.ok("qemu-img", "create", "-f", "raw", tab.toString(), "1M");
            Proc.ok("dd", "if=/dev/urandom", "of=" + newline, "bs=64k", "count=4", "status=none");
            Proc.ok("fallocate", "-p", "-o", "0", "-l", "65536", newline.toString());
            Path journal = m.mnt.resolve("journals").resolve("j\tk");
            Proc.ok("truncate", "-s", "4M", journal.toString());
            Proc.ok("dd", "if=/dev/urandom", "of=" + journal, "bs=4k", "count=2", "conv=notrunc,fsync", "status=none");
            Proc.ok("fallocate", "-p", "-o", "0", "-l", "65536", tab.toString()); // a release of each, counted
            Proc.ok("fallocate", "-p", "-o", "1M", "-l", "65536", journal.toString());
            String sum = Disk.sha256(newline);

            Proc.Result status = m.vmfuse("status", m.mnt.toString());
            status.assertOk();
            assertTrue(status.out().lines().anyMatch(l -> l.startsWith("a\\tb.raw ")), status.out());
            assertTrue(status.out().lines().anyMatch(l -> l.startsWith("c\\nd.raw ") && l.contains(" 65536 ")),
                    "the punch counted under the escaped name:\n" + status.out());
            Proc.Result list = m.vmfuse("journal", "list", m.mnt.toString());
            list.assertOk();
            assertTrue(list.out().lines().anyMatch(l -> l.startsWith("j\\tk ") && l.contains(" 8192 ")), list.out());

            // on the command line such a name would split the request to the daemon: refused, named
            assertOneLineError(m.vmfuse("journal", "create", "--size", "4M", "x\ty", m.mnt.toString()),
                    "'x\\ty' holds a tab, newline or carriage return");

            m.umount().assertOk();
            assertEquals(5, Files.readAllLines(m.store.resolve("releases.tsv")).size(),
                    "the format, one line per image and journal, and the total");
            m.mount();
            assertEquals(sum, Disk.sha256(newline));
            assertTrue(m.vmfuse("status", m.mnt.toString()).out().lines()
                    .anyMatch(l -> l.startsWith("c\\nd.raw ") && l.contains(" 65536 ")), "the counts came back");
        }
    }

    @Test
    void offsetsPastTwoToTheSixtyThirdAreRefusedAndChangeNothing() throws Exception {
        try (Mounted m = Mounted.create()) {
            Path img = m.image("o.raw");
            Proc.ok("dd", "if=/dev/urandom", "of=" + img, "bs=64k", "count=16", "status=none");
            String sum = Disk.sha256(img);

            Proc.Result w = Proc.run("xfs_io", "-c", "pwrite 9223372036854775000 4096", img.toString());
            String wout = w.out() + w.err();
            assertTrue(wout.contains("File too large") || wout.contains("Invalid argument"), w.describe());
            Proc.Result t = Proc.run("truncate", "-s", "9223372036854775807", img.toString());
            assertTrue(t.ok() || t.err().contains("too large") || t.err().contains("Invalid argument"), t.describe());
            Proc.run("truncate", "-s", String.valueOf(1 << 20), img.toString()).assertOk();
            Proc.Result f = Proc.run("fallocate", "-p", "-o", "9223372036854775000", "-l", "1048576", img.toString());
            assertFalse(f.ok(), f.describe());
            Proc.Result q = Proc.run("qemu-io", "-f", "raw", "-c", "write 9223372036854775296 512", img.toString());
            assertTrue(q.out().contains("error") || q.err().contains("rror") || !q.ok()
                    || q.out().contains("Invalid"), q.describe());

            assertEquals(sum, Disk.sha256(img), "the image is unchanged");
            assertEquals(1 << 20, Files.size(img));
        }
    }

    @Test
    void fullBackingDiskReturnsEnospcAndKeepsWhatWasWritten() throws Exception {
        try (Mounted m = Mounted.onTmpfs("48m")) {
            Path first = m.image("first.raw");
            Proc.ok("dd", "if=/dev/urandom", "of=" + first, "bs=1M", "count=16", "conv=fsync", "status=none");
            String sum = Disk.sha256(first);

            Proc.Result dd = Proc.run("dd", "if=/dev/urandom", "of=" + m.image("filler.raw"), "bs=1M", "count=64",
                    "conv=fsync", "status=none");
            assertFalse(dd.ok(), "writing 64 MiB into 32 MiB of free space must fail");
            assertTrue(dd.err().contains("No space left on device"), dd.describe());

            Proc.ok("qemu-img", "create", "-f", "raw", m.image("sparse.raw").toString(), "1G");
            Proc.Result qio = Proc.run("qemu-io", "-f", "raw", "-c", "write 512M 4M", m.image("sparse.raw").toString());
            assertTrue(qio.out().contains("No space left on device") || qio.err().contains("No space left on device"),
                    qio.describe());

            assertEquals(sum, Disk.sha256(first), "data written before the disk filled is intact");
            long kept = Files.size(m.image("filler.raw"));
            assertTrue(kept > 0, "what fit was kept");
            // space comes back and the mount works on
            Files.delete(m.image("filler.raw"));
            Proc.ok("dd", "if=/dev/zero", "of=" + m.image("after.raw"), "bs=1M", "count=8", "conv=fsync", "status=none");
            m.awaitLog("ENOSPC");
        }
    }
}
