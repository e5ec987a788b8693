package vmfuse.fs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;
import vmfuse.fs.nativeio.Native;

class NodeTest {

    @Test
    void resolvesTheFixedNamespace() throws Exception {
        assertEquals(Node.Kind.ROOT, Node.resolve("/").kind());
        assertEquals(Node.Kind.IMAGES_DIR, Node.resolve("/images").kind());
        assertEquals(Node.Kind.JOURNALS_DIR, Node.resolve("/journals").kind());
        assertEquals(new Node(Node.Kind.IMAGE, "vm1.qcow2"), Node.resolve("/images/vm1.qcow2"));
        assertEquals(new Node(Node.Kind.JOURNAL, "vm1"), Node.resolve("/journals/vm1"));
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
        assertEquals(Node.Kind.IMAGE, assertDoesNotThrow("/images/" + "x".repeat(255)).kind());
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
        for (String p : new String[] {"/other", "/images/a/b", "/imagesx"}) {
            assertEquals(Native.ENOENT, assertThrows(FsException.class, () -> Node.resolve(p)).errno(), p);
        }
    }

    private static Node assertDoesNotThrow(String p) {
        try {
            return Node.resolve(p);
        } catch (FsException e) {
            throw new AssertionError(p + ": " + e.getMessage(), e);
        }
    }
}
