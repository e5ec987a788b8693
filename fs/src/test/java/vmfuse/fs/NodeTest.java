package vmfuse.fs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import vmfuse.fs.nativeio.Native;

class NodeTest {

    @Test
    void resolvesTheNamespace() throws Exception {
        assertEquals(Node.Kind.ROOT, Node.resolve("/").kind());
        assertEquals(new Node(Node.Kind.IMAGES_DIR, ""), Node.resolve("/images"));
        assertEquals(Node.Kind.JOURNALS_DIR, Node.resolve("/journals").kind());
        assertEquals(new Node(Node.Kind.IMAGE_ENTRY, "vm1.qcow2"), Node.resolve("/images/vm1.qcow2"));
        assertEquals(new Node(Node.Kind.IMAGE_ENTRY, "tenant1/vm7/disk.qcow2"),
                Node.resolve("/images/tenant1/vm7/disk.qcow2"));
        assertEquals(new Node(Node.Kind.JOURNAL, "vm1"), Node.resolve("/journals/vm1"));
    }

    @Test
    void foldersUnderImagesAreBoundedInDepthAndLength() throws Exception {
        String seven = "a/".repeat(7);
        assertEquals(Node.Kind.IMAGE_ENTRY, Node.resolve("/images/" + seven + "disk.raw").kind());
        FsException deep = assertThrows(FsException.class, () -> Node.resolve("/images/" + seven + "b/disk.raw"));
        assertEquals(Native.ENAMETOOLONG, deep.errno());
        assertEquals("deeper than 8 levels under images/: " + seven + "b/disk.raw", deep.getMessage());
        String longPath = ("x".repeat(200) + "/").repeat(5) + "y".repeat(30);
        assertEquals(Native.ENAMETOOLONG, assertThrows(FsException.class,
                () -> Node.resolve("/images/" + longPath)).errno(), "1,035 bytes");
        assertEquals(Native.ENAMETOOLONG, assertThrows(FsException.class,
                () -> Node.checkImagePath(longPath)).errno());
        assertEquals(Native.EINVAL, assertThrows(FsException.class,
                () -> Node.checkImagePath("a/../../etc/passwd")).errno());
        assertEquals(Native.EINVAL, assertThrows(FsException.class, () -> Node.checkImagePath("/abs")).errno());
    }

    @Test
    void pathsSayTheirFolderLeafAndWhetherTheyAreHidden() {
        assertEquals("a/b", Node.folder("a/b/c.raw"));
        assertEquals("", Node.folder("c.raw"));
        assertEquals("c.raw", Node.leaf("a/b/c.raw"));
        assertTrue(Node.hidden("a/.fuse_hidden0001"));
        assertFalse(Node.hidden(".fuse_hiddenx/c.raw"));
        assertTrue(Node.within("a/b/c.raw", "a"));
        assertTrue(Node.within("a", "a"));
        assertFalse(Node.within("ab/c.raw", "a"), "a sibling whose name begins the same is not inside");
    }

    @Test
    void dotDotAndDotAreRefusedAnywhere() {
        for (String p : new String[] {"/images/..", "/images/../../etc/passwd", "/..", "/images/.", "/./images"}) {
            FsException e = assertThrows(FsException.class, () -> Node.resolve(p), p);
            assertEquals(Native.EINVAL, e.errno(), p);
        }
    }

    @Test
    void emptyComponentsNulAndOverlongNamesAreRefused() {
        assertEquals(Native.EINVAL, assertThrows(FsException.class, () -> Node.resolve("/images//a")).errno());
        assertEquals(Native.EINVAL, assertThrows(FsException.class, () -> Node.resolve("/images/a\0b")).errno());
        assertEquals(Native.EINVAL, assertThrows(FsException.class, () -> Node.resolve("images/a")).errno());
        assertEquals(Native.EINVAL, assertThrows(FsException.class, () -> Node.resolve(null)).errno());
        assertEquals(Native.ENAMETOOLONG,
                assertThrows(FsException.class, () -> Node.resolve("/images/" + "x".repeat(256))).errno());
        // 255 bytes is fine; 128 two-byte characters is 256 bytes and is not
        assertEquals(Node.Kind.IMAGE_ENTRY, assertDoesNotThrow("/images/" + "x".repeat(255)).kind());
        assertEquals(Native.ENAMETOOLONG,
                assertThrows(FsException.class, () -> Node.resolve("/images/" + "é".repeat(128))).errno());
    }

    @Test
    void checkNameRefusesSlashesForNamesFromTheCommandLine() {
        FsException e = assertThrows(FsException.class, () -> Node.checkName("a/b"));
        assertEquals(Native.EINVAL, e.errno());
        assertEquals("name may not contain '/': a/b", e.getMessage());
    }

    @Test
    void pathsOutsideTheNamespaceDoNotExist() {
        for (String p : new String[] {"/other", "/journals/a/b", "/imagesx"}) {
            assertEquals(Native.ENOENT, assertThrows(FsException.class, () -> Node.resolve(p)).errno(), p);
        }
    }

    @Test
    void newNamesMayNotBeLibfusesHiddenNamesAndTypedOnesHoldNoControlCharacters() throws Exception {
        Node.checkNewName("a\tb.raw"); // the mount takes what POSIX takes
        assertEquals(Native.EPERM, assertThrows(FsException.class, () -> Node.checkNewName(".fuse_hidden01")).errno());
        assertEquals(Native.EINVAL, assertThrows(FsException.class, () -> Node.checkTypedName("a\tb")).errno());
        assertEquals(Native.EINVAL, assertThrows(FsException.class, () -> Node.checkTypedName("a\u007fb")).errno());
        Node.checkTypedName("vm-1.raw");
    }

    private static Node assertDoesNotThrow(String p) {
        try {
            return Node.resolve(p);
        } catch (FsException e) {
            throw new AssertionError(p + ": " + e.getMessage(), e);
        }
    }
}
