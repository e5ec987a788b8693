package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;

/** The operations around the data: names, attributes, listing, statfs, all reaching the backing files. */
class MetadataOpsTest extends OnOneMount {

    @Test
    void renameMovesTheBackingFileAndItsReleaseCounts() throws Exception {
        Proc.ok("qemu-img", "create", "-f", "raw", m.image("old.raw").toString(), "4M");
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 9 0 1M", "-c", "discard 0 64k", m.image("old.raw").toString());
        Proc.ok("mv", m.image("old.raw").toString(), m.image("new.raw").toString());
        assertFalse(Files.exists(m.backing("old.raw")));
        assertTrue(Files.exists(m.backing("new.raw")));
        Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 9 64k 960k", m.image("new.raw").toString());
        String status = m.vmfuse("status", m.mnt.toString()).assertOk().out();
        assertTrue(status.lines().anyMatch(l -> l.startsWith("new.raw") && l.contains(" 65536 ")), status);

        // rename(2) between images/ and journals/ is EXDEV, as between two filesystems (mv then copies)
        Proc.Result toJournals = Proc.run("python3", "-c", "import os, sys\ntry:\n    os.rename(sys.argv[1], sys.argv[2])\n"
                + "except OSError as e:\n    print(e.strerror)", m.image("new.raw").toString(),
                m.mnt.resolve("journals/x").toString());
        assertEquals("Invalid cross-device link", toJournals.out().trim(), toJournals.describe());
        assertTrue(Files.exists(m.backing("new.raw")));
        assertFalse(Files.exists(m.mnt.resolve("journals/x")));
    }

    @Test
    void renameOverAnOpenImageKeepsTheOpenOneReadable() throws Exception {
        Proc.ok("qemu-img", "create", "-f", "raw", m.image("a.raw").toString(), "1M");
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", m.image("a.raw").toString());
        Proc.ok("qemu-img", "create", "-f", "raw", m.image("b.raw").toString(), "1M");
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 2 0 4k", m.image("b.raw").toString());
        Proc.Result r = Proc.ok("python3", "-c", String.join("\n",
                "import os, sys",
                "fd = os.open(sys.argv[1], os.O_RDONLY)",
                "os.rename(sys.argv[2], sys.argv[1])",
                "print(os.pread(fd, 1, 0)[0], os.fstat(fd).st_size)",
                "print(open(sys.argv[1], 'rb').read(1)[0])"),
                m.image("a.raw").toString(), m.image("b.raw").toString());
        assertEquals("1 1048576\n2", r.out().trim(), r.describe());
        // python has exited, but the release that removes the hidden file is asynchronous to its close
        Poll.until(() -> ReleaseSpaceTest.hiddenIn(m.store.resolve("images")) == 0,
                () -> "a .fuse_hidden file left in the store");
    }

    @Test
    void chmodChownAndTimesReachTheBackingFile() throws Exception {
        Proc.ok("qemu-img", "create", "-f", "raw", m.image("attr.raw").toString(), "1M");
        Proc.ok("chmod", "600", m.image("attr.raw").toString());
        assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(m.backing("attr.raw"))));
        Proc.ok("chown", "1234:5678", m.image("attr.raw").toString());
        assertEquals("1234 5678", Proc.ok("stat", "-c", "%u %g", m.backing("attr.raw").toString()).out().trim());
        Proc.ok("touch", "-m", "-d", "2001-02-03 04:05:06 UTC", m.image("attr.raw").toString());
        assertEquals(FileTime.from(java.time.Instant.parse("2001-02-03T04:05:06Z")), Files.getLastModifiedTime(m.backing("attr.raw")));
        assertEquals(FileTime.from(java.time.Instant.parse("2001-02-03T04:05:06Z")), Files.getLastModifiedTime(m.image("attr.raw")));
    }

    /**
     * A journal device's owner and mode, as libvirt's dynamic ownership sets them for the user QEMU
     * runs as: enforced by the kernel, committed at once, kept across a remount.
     */
    @Test
    void journalDevicesTakeAnOwnerAndAModeThatAreEnforcedAndKept() throws Exception {
        try (Mounted own = Mounted.create()) {
            Files.setPosixFilePermissions(own.root, PosixFilePermissions.fromString("rwxr-xr-x"));
            own.vmfuse("journal", "create", "--size", "4M", "jo", own.mnt.toString()).assertOk();
            String dev = own.mnt.resolve("journals/jo").toString();
            assertEquals("600 0 0", Proc.ok("stat", "-c", "%a %u %g", dev).out().trim());
            String[] write = {"runuser", "-u", "nobody", "--", "dd", "if=/dev/zero", "of=" + dev, "bs=4k", "count=1",
                    "conv=notrunc,fsync", "status=none"};
            assertFalse(Proc.run(write).ok(), "root's device, 0600: nobody may not write");
            Proc.ok("chown", "65534:65534", dev);
            Proc.ok("chmod", "640", dev);
            assertEquals("640 65534 65534", Proc.ok("stat", "-c", "%a %u %g", dev).out().trim());
            Proc.ok(write);
            assertFalse(Proc.run("runuser", "-u", "daemon", "--", "chmod", "666", dev).ok(), "only its owner or root");
            assertFalse(Proc.run("runuser", "-u", "nobody", "--", "chown", "daemon", dev).ok(), "only root gives it away");
            own.umount().assertOk();
            own.mount();
            assertEquals("640 65534 65534", Proc.ok("stat", "-c", "%a %u %g", dev).out().trim());
            own.awaitLog("journal owner device=jo uid=65534 gid=65534 mode=640");
        }
    }

    /**
     * An unlink that crosses the last close: libfuse counts a file open until just after our
     * release returns, and an unlink in that moment (rm right after losetup -d, whose close comes
     * late) becomes a hide of a file we have closed already. That hide is let through (it was
     * refused, EPERM, as someone's rename to libfuse's name), and libfuse then unlinks it. The
     * moment is widened here (each release returns 400 ms late) so that every unlink falls in it.
     */
    @Test
    void anUnlinkThatCrossesTheLastCloseDeletesTheFile() throws Exception {
        try (Mounted own = Mounted.prepare()) {
            own.mountWithProperty("vmfuse.test.releaseDelayMillis=400");
            for (String f : new String[] {"journals/lj", "images/li.raw"}) {
                Path p = own.mnt.resolve(f);
                Proc.ok("truncate", "-s", "4M", p.toString());
                // the close's release runs (and sleeps) while the rm comes
                Proc.Result r = Proc.run(Duration.ofSeconds(30), "bash", "-c",
                        "(exec 3<>\"$1\"; exec 3>&-) & sleep 0.2; rm \"$1\"; rc=$?; wait; exit $rc", "-", p.toString());
                assertEquals(0, r.exit(), f + ": " + r.describe() + "\n" + own.log());
                Poll.until(() -> !Files.exists(p), () -> f + " still there");
            }
            Poll.until(() -> Proc.ok("ls", "-a", own.mnt.resolve("journals").toString(), own.store.resolve("images").toString())
                    .out().lines().noneMatch(l -> l.startsWith("l") || l.startsWith(".fuse_hidden")),
                    () -> Proc.ok("ls", "-a", own.mnt.resolve("journals").toString(), own.store.resolve("images").toString()).out());
        }
    }

    @Test
    void createdImagesBelongToTheirCreator() throws Exception {
        Files.setPosixFilePermissions(m.root, PosixFilePermissions.fromString("rwxr-xr-x")); // a temp dir is 0700
        Proc.Result r = Proc.run("setpriv", "--reuid=4321", "--regid=4321", "--clear-groups",
                "qemu-img", "create", "-f", "raw", m.image("user.raw").toString(), "1M");
        // images/ belongs to root and is 0755: an ordinary user may not create there
        assertFalse(r.ok(), r.describe());
        Proc.ok("chmod", "1777", m.mnt.resolve("images").toString()); // through the mount, to the store
        Proc.run("setpriv", "--reuid=4321", "--regid=4321", "--clear-groups",
                "qemu-img", "create", "-f", "raw", m.image("user.raw").toString(), "1M").assertOk();
        assertEquals("4321 4321", Proc.ok("stat", "-c", "%u %g", m.backing("user.raw").toString()).out().trim());
        assertEquals("1777", Proc.ok("stat", "-c", "%a", m.store.resolve("images").toString()).out().trim());
        Proc.ok("chmod", "755", m.mnt.resolve("images").toString());
    }

    @Test
    void listingShowsExactlyTheStoresRegularFilesAndFolders() throws Exception {
        Proc.ok("qemu-img", "create", "-f", "qcow2", m.image("l1.qcow2").toString(), "1G");
        Files.createDirectories(m.store.resolve("images/a-dir"));
        Files.createSymbolicLink(m.store.resolve("images/a-link"), m.store.resolve("images/l1.qcow2"));
        Proc.ok("mkfifo", m.store.resolve("images/a-fifo").toString());
        List<String> mount;
        try (Stream<Path> s = Files.list(m.mnt.resolve("images"))) {
            mount = s.map(p -> p.getFileName().toString()).sorted().toList();
        }
        List<String> store;
        try (Stream<Path> s = Files.list(m.store.resolve("images"))) {
            store = s.filter(p -> Files.isRegularFile(p, java.nio.file.LinkOption.NOFOLLOW_LINKS)
                            || Files.isDirectory(p, java.nio.file.LinkOption.NOFOLLOW_LINKS))
                    .map(p -> p.getFileName().toString()).sorted().toList();
        }
        assertEquals(store, mount);
        assertTrue(mount.containsAll(List.of("a-dir", "l1.qcow2")), mount.toString());
        assertFalse(mount.contains("a-link") || mount.contains("a-fifo"), "neither the symlink nor the fifo: " + mount);
        Files.delete(m.store.resolve("images/a-link"));
        Files.delete(m.store.resolve("images/a-fifo"));
        Files.delete(m.store.resolve("images/a-dir"));
        try (Stream<Path> s = Files.list(m.mnt)) {
            assertEquals(List.of("images", "journals"), s.map(p -> p.getFileName().toString()).sorted().toList());
        }
    }

    @Test
    void statfsIsTheBackingFilesystems() {
        String mnt = Proc.ok("stat", "-f", "-c", "%S %b", m.mnt.toString()).out().trim();
        String store = Proc.ok("stat", "-f", "-c", "%S %b", m.store.toString()).out().trim();
        assertEquals(store, mnt);
    }

    @Test
    void zeroRangeWithKeepSizeReleasesAndKeepsTheSize() throws Exception {
        Path img = m.image("zk.raw");
        Proc.ok("dd", "if=/dev/urandom", "of=" + img, "bs=1M", "count=2", "conv=fsync", "status=none");
        // fallocate -z -n sends ZERO_RANGE|KEEP_SIZE (0x11), as the loop driver does
        Proc.ok("fallocate", "-z", "-n", "-o", "1048576", "-l", "4194304", img.toString());
        assertEquals(2L << 20, Files.size(img));
        assertEquals(1L << 20, Disk.allocated(m.backing("zk.raw")));
    }

    @Test
    void smallSplicedAndShortReadsReturnExactlyTheBackingBytes() throws Exception {
        // sizes around the splice threshold (32 KiB) and the end of file, read with O_DIRECT so
        // every read reaches the daemon
        byte[] data = new byte[300_007];
        new java.util.Random(5).nextBytes(data);
        Files.write(m.backing("odd.raw"), data);
        Path img = m.image("odd.raw");
        for (int bs : new int[] {512, 4096, 32768, 32769, 65536, 131072}) {
            Proc.Result r = Proc.ok("python3", "-c", String.join("\n",
                    "import os, sys, mmap, hashlib",
                    "bs = int(sys.argv[2])",
                    "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)",
                    "buf = mmap.mmap(-1, bs)",
                    "out = bytearray()",
                    "while True:",
                    "    n = os.preadv(fd, [buf], len(out))",
                    "    out += buf[:n]",
                    "    if n < bs: break",
                    "print(len(out), hashlib.sha256(out).hexdigest())"), img.toString(), String.valueOf(bs));
            assertEquals(data.length + " " + Disk.sha256(m.backing("odd.raw")), r.out().trim(), "read with bs=" + bs);
        }
        assertTrue(java.util.Arrays.equals(data, Files.readAllBytes(img)));
    }
}
