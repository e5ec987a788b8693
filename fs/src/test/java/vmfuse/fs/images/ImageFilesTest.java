package vmfuse.fs.images;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static vmfuse.fs.nativeio.Native.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import vmfuse.fs.FsException;
import vmfuse.fs.space.HolePuncher;
import vmfuse.fs.space.ReleaseLedger;
import vmfuse.fs.volume.Door;
import vmfuse.fs.volume.ImageVolume;

/** The images' namespace below the doors: renames of folders with what is open and counted in them, and the limits. */
class ImageFilesTest {
    @TempDir
    Path root;
    private Path images;
    private ImagesDir dir;
    private ReleaseLedger ledger;
    private ImageFiles files;

    @BeforeEach
    void open() throws Exception {
        images = Files.createDirectories(root.resolve("images"));
        dir = ImagesDir.open(images);
        ledger = ReleaseLedger.load(root.resolve("releases.tsv"));
        files = new ImageFiles(dir, new HolePuncher(ledger), ledger);
    }

    @AfterEach
    void close() {
        files.closeAll();
        dir.close();
    }

    @Test
    void aFolderRenameCarriesItsOpenVolumesAndCountsAndReplacesNothingElse() throws Exception {
        files.mkdir("t1", 0755, 0, 0);
        files.mkdir("t1/vm", 0755, 0, 0);
        files.mkdir("t10", 0755, 0, 0);
        ImageVolume v = files.create("t1/vm/disk.raw", O_RDWR, 0644, 0, 0);
        ImageVolume sibling = files.create("t10/disk.raw", O_RDWR, 0644, 0, 0);
        v.truncate(1 << 20);
        v.truncate(0); // a release, counted under the image's path
        files.mkdir("archive", 0755, 0, 0);

        files.rename("t1", "archive/t1");

        assertEquals("archive/t1/vm/disk.raw", v.name());
        assertEquals("t10/disk.raw", sibling.name(), "a sibling whose name begins the same stays");
        assertEquals(Map.of("archive/t1/vm/disk.raw", 1, "t10/disk.raw", 1), files.openCounts());
        assertEquals(1, ledger.of(ReleaseLedger.image("archive/t1/vm/disk.raw")).events());
        assertTrue(files.isOpen("archive/t1/vm/disk.raw"));
        assertFalse(files.isOpen("t1/vm/disk.raw"));
        assertTrue(Files.isRegularFile(images.resolve("archive/t1/vm/disk.raw")));
    }

    @Test
    void aFolderCannotMoveIntoItselfNorPastTheLimits() throws Exception {
        files.mkdir("a", 0755, 0, 0);
        files.mkdir("a/b", 0755, 0, 0);
        files.create("a/b/disk.raw", O_RDWR, 0644, 0, 0).close();
        FsException into = assertThrows(FsException.class, () -> files.rename("a", "a/b/a"));
        assertEquals(EINVAL, into.errno());

        String deep = "x/x/x/x/x";
        Files.createDirectories(images.resolve(deep));
        // x/x/x/x/x/a/b/disk.raw: 8 components, the limit itself; one level more is refused
        files.rename("a", deep + "/a");
        files.rename(deep + "/a", "a");
        Files.createDirectories(images.resolve(deep + "/y"));
        assertEquals(ENAMETOOLONG, assertThrows(FsException.class, () -> files.rename("a", deep + "/y/a")).errno());
        assertTrue(Files.isRegularFile(images.resolve("a/b/disk.raw")), "a refused move moved nothing");

        String wide = ("w".repeat(250) + "/").repeat(3) + "w".repeat(250); // 1,003 bytes
        Files.createDirectories(images.resolve(wide));
        String to = wide + "/" + "n".repeat(12); // 1,016 bytes: the folder fits, what it holds would not
        assertEquals(ENAMETOOLONG, assertThrows(FsException.class, () -> files.rename("a", to)).errno(),
                "a/b/disk.raw at 1,027 bytes");
    }

    @Test
    void aFolderHoldingOnlyImagesUnlinkedWhileOpenIsBusyNotEmpty() throws Exception {
        files.mkdir("t", 0755, 0, 0);
        Files.writeString(images.resolve("t/.fuse_hidden0001"), "unlinked, still open");
        assertEquals(EBUSY, assertThrows(FsException.class, () -> files.rmdir("t")).errno());
        Files.writeString(images.resolve("t/other.raw"), "");
        assertEquals(ENOTEMPTY, assertThrows(FsException.class, () -> files.rmdir("t")).errno());
    }

    /** One door writes an image at a time; either reads it; a door's own opens share it. */
    @Test
    void oneDoorWritesAnImageAtATime() throws Exception {
        files.create("vm.raw", O_RDWR, 0644, 0, 0).close();
        ImageVolume mount = files.open("vm.raw", O_RDWR, Door.MOUNT);
        ImageVolume mount2 = files.open("vm.raw", O_RDWR, Door.MOUNT); // QEMU and qemu-img: the kernel's locks decide
        ImageVolume nbd = files.open("vm.raw", O_RDWR, Door.NBD); // opening is not writing
        FsException busy = assertThrows(FsException.class, () -> files.claimWriter(nbd, Door.NBD));
        assertEquals(EBUSY, busy.errno());
        assertTrue(busy.getMessage().contains("being written through the mount"), busy.getMessage());
        mount.close();
        assertThrows(FsException.class, () -> files.claimWriter(nbd, Door.NBD), "one writer through the mount is left");
        mount2.close();
        files.claimWriter(nbd, Door.NBD);
        ImageVolume nbd2 = files.open("vm.raw", O_RDWR, Door.NBD);
        files.claimWriter(nbd2, Door.NBD); // another connection of the NBD door
        FsException back = assertThrows(FsException.class, () -> files.open("vm.raw", O_WRONLY, Door.MOUNT));
        assertEquals(EBUSY, back.errno());
        assertTrue(back.getMessage().contains("through the NBD socket"), back.getMessage());
        assertEquals(Map.of("vm.raw", 2), files.openCounts(), "the refused open was closed");
        files.open("vm.raw", O_RDONLY, Door.MOUNT).close(); // reading through the mount goes on
        nbd.close();
        nbd2.close();
        files.open("vm.raw", O_RDWR, Door.MOUNT).close();
        files.create("other.raw", O_RDWR, 0644, 0, 0).close(); // another image is no one's business

        ImageVolume writer = files.open("vm.raw", O_RDWR, Door.NBD);
        files.claimWriter(writer, Door.NBD);
        files.rename("vm.raw", "moved.raw"); // the file keeps its writer under its new name
        assertEquals(EBUSY, assertThrows(FsException.class, () -> files.open("moved.raw", O_RDWR, Door.MOUNT)).errno());
        assertEquals(EBUSY, assertThrows(FsException.class, () -> files.truncate("moved.raw", 0)).errno(),
                "a truncate by name writes through the mount too");
        writer.close();
        files.truncate("moved.raw", 4096);
    }
    /**
     * open(2) with O_TRUNC (libfuse's atomic_o_trunc, or a create that finds the file) writes the
     * image: refused while the other door writes it, before anything is cut (a review found a
     * running VM's image cut to 0 and then the open refused), and a cut that happens is counted.
     */
    @Test
    void anOpenWithOTruncWritesTheImageAndIsRefusedBeforeItCutsAnything() throws Exception {
        files.create("vm.raw", O_RDWR, 0644, 0, 0).close();
        Files.write(images.resolve("vm.raw"), new byte[1 << 20]);
        ImageVolume writer = files.open("vm.raw", O_RDWR, Door.NBD);
        files.claimWriter(writer, Door.NBD);
        for (int flags : new int[] {O_RDWR | O_TRUNC, O_WRONLY | O_TRUNC, O_RDONLY | O_TRUNC}) {
            FsException busy = assertThrows(FsException.class, () -> files.open("vm.raw", flags, Door.MOUNT));
            assertEquals(EBUSY, busy.errno(), "open flags " + Integer.toOctalString(flags));
            assertEquals(1 << 20, Files.size(images.resolve("vm.raw")), "open flags " + Integer.toOctalString(flags));
        }
        FsException busy = assertThrows(FsException.class,
                () -> files.create("vm.raw", O_RDWR | O_CREAT | O_TRUNC, 0644, 0, 0));
        assertEquals(EBUSY, busy.errno());
        assertEquals(1 << 20, Files.size(images.resolve("vm.raw")), "create with O_TRUNC of the running image");
        assertEquals(Map.of("vm.raw", 1), files.openCounts(), "every refused open was closed");
        writer.close();

        files.open("vm.raw", O_RDONLY | O_TRUNC, Door.MOUNT).close();
        assertEquals(0, Files.size(images.resolve("vm.raw")));
        Files.write(images.resolve("vm.raw"), new byte[1 << 20]);
        files.create("vm.raw", O_RDWR | O_CREAT | O_TRUNC, 0644, 0, 0).close();
        assertEquals(0, Files.size(images.resolve("vm.raw")));
        assertEquals(2, ledger.of(ReleaseLedger.image("vm.raw")).events(), "both cuts are counted");
    }
}
