package vmfuse.fs.mount;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;

import org.junit.jupiter.api.Test;

class MountTableTest {

    @Test
    void parsesVmfuseAndOtherMountsWithOptionalFields() {
        List<MountTable.Entry> e = MountTable.parse(List.of(
                "22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw",
                "95 30 0:50 / /srv/my\\040vms rw,nosuid,nodev,relatime shared:40 master:1 - fuse.vmfuse "
                        + "/var/lib/vm\\134fuse rw,user_id=0,group_id=0,default_permissions,allow_other",
                "garbage line"));
        assertEquals(2, e.size());
        assertFalse(e.get(0).isVmfuse());
        assertEquals("/srv/my vms", e.get(1).mountPoint());
        assertEquals("/var/lib/vm\\fuse", e.get(1).source());
        assertTrue(e.get(1).isVmfuse());
    }

    @Test
    void unescapesOnlyThreeDigitOctal() {
        assertEquals("a b\tc\nd", MountTable.unescape("a\\040b\\011c\\012d"));
        assertEquals("a\\9b", MountTable.unescape("a\\9b"));
        assertEquals("tail\\04", MountTable.unescape("tail\\04"));
    }
}
