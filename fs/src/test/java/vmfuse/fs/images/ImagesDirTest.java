package vmfuse.fs.images;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static vmfuse.fs.nativeio.Native.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import vmfuse.fs.FsException;
import vmfuse.fs.nativeio.LibC;
import vmfuse.fs.nativeio.StructStat;

/**
 * STORE/images walked folder by folder: what a symlink planted in the store (by hand, not
 * through the mount) does to each call, and descriptors of folders that outlive their names.
 */
class ImagesDirTest {
    @TempDir
    Path root;
    private Path images;
    private Path outside;
    private ImagesDir dir;

    @BeforeEach
    void open() throws Exception {
        images = Files.createDirectories(root.resolve("images"));
        outside = Files.createDirectories(root.resolve("outside"));
        Files.writeString(outside.resolve("secret.raw"), "outside the store");
        Files.createDirectories(images.resolve("t1/vm"));
        Files.createSymbolicLink(images.resolve("t1/evil"), outside); // a folder swapped for a link
        dir = ImagesDir.open(images);
    }

    @AfterEach
    void close() {
        dir.close();
    }

    /**
     * The rename that undoes a hide (VmFuseFs#unhide) replaces nothing: EEXIST, and both files as
     * they were, when a newer file has the name by then.
     */
    @Test
    void aRenameWithoutReplacingFailsOnAnExistingNameAndChangesNothing() throws Exception {
        Files.writeString(images.resolve("t1/vm/.fuse_hidden01"), "old, unlinked");
        Files.writeString(images.resolve("t1/vm/b.raw"), "newer, fsynced");
        assertEquals(EEXIST, assertThrows(FsException.class,
                () -> dir.renameNoReplace("t1/vm/.fuse_hidden01", "t1/vm/b.raw")).errno());
        assertEquals("newer, fsynced", Files.readString(images.resolve("t1/vm/b.raw")));
        assertEquals("old, unlinked", Files.readString(images.resolve("t1/vm/.fuse_hidden01")));
        Files.delete(images.resolve("t1/vm/b.raw"));
        dir.renameNoReplace("t1/vm/.fuse_hidden01", "t1/vm/b.raw");
        assertEquals("old, unlinked", Files.readString(images.resolve("t1/vm/b.raw")));
    }

    @Test
    void noCallWalksThroughASymlinkedFolder() throws Exception {
        assertEquals(ENOENT, assertThrows(FsException.class, () -> dir.openImage("t1/evil/secret.raw", O_RDWR)).errno());
        assertEquals(ENOENT, assertThrows(FsException.class, () -> dir.createImage("t1/evil/new.raw", O_RDWR, 0644))
                .errno());
        assertEquals(ENOENT, assertThrows(FsException.class, () -> dir.mkdir("t1/evil/d", 0755, 0, 0)).errno());
        Files.writeString(images.resolve("t1/vm/disk.raw"), "data");
        assertEquals(ENOENT, assertThrows(FsException.class, () -> dir.rename("t1/vm/disk.raw", "t1/evil/disk.raw"))
                .errno());
        assertEquals(ENOENT, assertThrows(FsException.class, () -> dir.unlink("t1/evil/secret.raw")).errno());
        assertEquals(ENOENT, assertThrows(FsException.class, () -> dir.stat("t1/evil", StructStat.allocate()))
                .errno());
        assertEquals(ENOENT, assertThrows(FsException.class, () -> dir.chmod("t1/evil", 0777)).errno());
        assertEquals(List.of("secret.raw"), Files.list(outside).map(p -> p.getFileName().toString()).toList(),
                "nothing made, moved or removed outside the store");
        assertEquals("outside the store", Files.readString(outside.resolve("secret.raw")));
        assertEquals(List.of("vm"), dir.list("t1"), "the link is not listed");
    }

    @Test
    void aFileInThePathIsNotADirectoryAndALinkedLeafIsNotAnImage() throws Exception {
        Files.writeString(images.resolve("t1/vm/disk.raw"), "data");
        assertEquals(ENOTDIR, assertThrows(FsException.class, () -> dir.openImage("t1/vm/disk.raw/x", O_RDONLY))
                .errno());
        Files.createSymbolicLink(images.resolve("t1/vm/link.raw"), outside.resolve("secret.raw"));
        assertEquals(ELOOP, assertThrows(FsException.class, () -> dir.openImage("t1/vm/link.raw", O_RDWR)).errno());
        assertEquals(ENOENT, assertThrows(FsException.class, () -> dir.chmod("t1/vm/link.raw", 0777)).errno());
        assertEquals(List.of("t1/vm/disk.raw"), dir.images());
    }

    @Test
    void anOpenFolderListsAndSyncsWhatItIsAfterARenameAbove() throws Exception {
        Files.writeString(images.resolve("t1/vm/disk.raw"), "data");
        int fd = dir.openFolder("t1/vm");
        try {
            dir.rename("t1", "t2");
            Files.createDirectories(images.resolve("t1/vm")); // a new folder under the old name
            assertEquals(List.of("disk.raw"), dir.list(fd));
            dir.syncDir(fd);
        } finally {
            LibC.INSTANCE.close(fd);
        }
    }

    @Test
    void aTreeNamesEverythingAFolderRenameMoves() throws Exception {
        Files.writeString(images.resolve("t1/vm/disk.raw"), "data");
        Files.writeString(images.resolve("t1/vm/.fuse_hidden0001"), "open, unlinked");
        assertEquals(List.of("vm", "vm/.fuse_hidden0001", "vm/disk.raw"), dir.tree("t1"));
        assertFalse(dir.holdsOnlyHidden("t1/vm"));
        Files.delete(images.resolve("t1/vm/disk.raw"));
        assertTrue(dir.holdsOnlyHidden("t1/vm"));
        assertFalse(dir.exists("t1/vm"), "a folder is not an image");
    }
}
