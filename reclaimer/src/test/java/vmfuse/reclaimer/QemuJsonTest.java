package vmfuse.reclaimer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * The fence's safety verdicts read QEMU's JSON field by field (FAULTS.md, issue 14): before, they
 * were substring and regex matches (contains("\"inconsistent\": true"), the nearest braces around
 * a bitmap's name), which QEMU's key order, spacing or a nested object could turn.
 */
class QemuJsonTest {
    private static List<JsonNode> bitmaps(String json) throws IOException {
        List<JsonNode> out = new ArrayList<>();
        Qmp.parse(json, "test").forEach(out::add);
        return out;
    }

    private static String online(String json, String name) throws IOException {
        return QemuFence.untrusted(QemuFence.bitmap(bitmaps(json), name, "test"), false);
    }

    @Test
    void aBitmapIsJudgedByItsOwnFieldsWhateverTheOrderAndSpacing() throws Exception {
        String a = "[{\"name\": \"vmfuse-fence-1\", \"recording\": true, \"busy\": false, \"persistent\": true}]";
        String b = "[{\"persistent\":true,\"busy\":false,\"recording\":true,\"name\":\"vmfuse-fence-1\"}]";
        assertNull(online(a, "vmfuse-fence-1"));
        assertNull(online(b, "vmfuse-fence-1"));
        String stopped = "[{\"recording\":false,\"name\":\"vmfuse-fence-1\"}]";
        assertTrue(online(stopped, "vmfuse-fence-1").startsWith("it no longer records writes"));
        String broken = "[{\"name\":\"vmfuse-fence-1\",\"recording\":true,\"inconsistent\":true}]";
        assertTrue(online(broken, "vmfuse-fence-1").startsWith("it is inconsistent"));
    }

    @Test
    void anotherBitmapOrANestedObjectNeverDecidesForIt() throws Exception {
        // the neighbour does not record; a nested object says recording false: neither is this bitmap
        String json = "[{\"name\":\"other\",\"recording\":false},"
                + "{\"name\":\"vmfuse-fence-2\",\"extra\":{\"recording\":false,\"inconsistent\":true},\"recording\":true}]";
        assertNull(online(json, "vmfuse-fence-2"));
        assertTrue(online(json, "other").startsWith("it no longer records"));
        assertTrue(online(json, "vmfuse-fence-3").startsWith("it is gone"));
    }

    @Test
    void aMissingOrChangedFieldIsAnErrorThatNamesIt() throws Exception {
        IOException e = assertThrows(IOException.class, () -> online("[{\"name\":\"f\"}]", "f"));
        assertTrue(e.getMessage().contains("no field 'recording'"), e.getMessage());
        e = assertThrows(IOException.class, () -> online("[{\"name\":\"f\",\"recording\":\"yes\"}]", "f"));
        assertTrue(e.getMessage().contains("field 'recording' is STRING, not a boolean"), e.getMessage());
        e = assertThrows(IOException.class, () -> online("[{\"nom\":\"f\",\"recording\":true}]", "f"));
        assertTrue(e.getMessage().contains("no field 'name'"), e.getMessage());
    }

    @Test
    void qemuImgInfoBitmapsAreReadFromTheirFlags() throws Exception {
        String info = "{\"virtual-size\": 67108864, \"format-specific\": {\"type\": \"qcow2\", \"data\": {\"compat\": "
                + "\"1.1\", \"bitmaps\": [{\"flags\": [\"auto\"], \"name\": \"vmfuse-fence-1\", \"granularity\": 65536},"
                + " {\"flags\": [\"in-use\", \"auto\"], \"name\": \"vmfuse-fence-2\", \"granularity\": 65536},"
                + " {\"flags\": [], \"name\": \"vmfuse-fence-3\", \"granularity\": 65536}]}}}";
        List<JsonNode> b = QemuFence.offlineBitmaps(info);
        assertNull(QemuFence.untrusted(QemuFence.bitmap(b, "vmfuse-fence-1", "t"), true));
        assertTrue(QemuFence.untrusted(QemuFence.bitmap(b, "vmfuse-fence-2", "t"), true).startsWith("it is inconsistent"));
        assertTrue(QemuFence.untrusted(QemuFence.bitmap(b, "vmfuse-fence-3", "t"), true).startsWith("it no longer records"));
        assertEquals(List.of(), QemuFence.offlineBitmaps(
                "{\"format-specific\": {\"type\": \"qcow2\", \"data\": {\"compat\": \"1.1\"}}}"), "no bitmaps at all");
        IOException e = assertThrows(IOException.class, () -> QemuFence.offlineBitmaps("{\"format\": \"qcow2\"}"));
        assertTrue(e.getMessage().contains("no field 'format-specific'"), e.getMessage());
        e = assertThrows(IOException.class, () -> QemuFence.untrusted(
                QemuFence.bitmap(QemuFence.offlineBitmaps(info.replace("\"flags\": [\"auto\"], ", "")),
                        "vmfuse-fence-1", "t"), true));
        assertTrue(e.getMessage().contains("no field 'flags'"), e.getMessage());
        e = assertThrows(IOException.class, () -> QemuFence.offlineBitmaps("not json"));
        assertTrue(e.getMessage().startsWith("qemu-img info: not JSON"), e.getMessage());
    }
}
