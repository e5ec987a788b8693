package vmfuse.reclaimer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static vmfuse.reclaimer.Tools.ok;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The reclaimer chooses an image's fence by the image's format, not the caller. */
class ImageFenceTest {
    @TempDir
    Path dir;

    private ImageFence.Image image(Path file, Path qmp) {
        return new ImageFence.Image(file.getFileName().toString(), file, file, qmp, dir.resolve("nbd.sock"),
                () -> 0, () -> 12345, action -> false, (off, len) -> len);
    }

    @Test
    void aRawImageHasItsWritesCountedByTheFilesystem() throws Exception {
        Path raw = Files.write(dir.resolve("vm.raw"), new byte[8192]);
        ImageFence f = ImageFence.of(image(raw, null), WriteTracker.newEpoch(), WriteTracker.Limits.DEFAULT);
        assertInstanceOf(RawFence.class, f.fence());
        assertNotNull(f.tracker());
        assertNotNull(f.identity(), "a clean stop is recorded with the image's identity");
        assertEquals(12345, f.diskSize().getAsLong(), "the file's length");
    }

    @Test
    void aQcow2ImageGoesThroughItsQemuAndNeedsItsQmpSocket() throws Exception {
        Path q = dir.resolve("vm.qcow2");
        ok("qemu-img", "create", "-q", "-f", "qcow2", q.toString(), "3G");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ImageFence.of(image(q, null), WriteTracker.newEpoch(), WriteTracker.Limits.DEFAULT));
        assertTrue(e.getMessage().contains("is qcow2: its reclaim goes through QEMU, give the VM's QMP socket"),
                e.getMessage());
        ImageFence f = ImageFence.of(image(q, dir.resolve("qmp.sock")), WriteTracker.newEpoch(),
                WriteTracker.Limits.DEFAULT);
        assertInstanceOf(QemuFence.class, f.fence());
        assertNull(f.tracker());
        assertNull(f.identity(), "QEMU's bitmaps prove the fence across restarts");
        assertEquals(3L << 30, f.diskSize().getAsLong(), "the virtual size, from the header");
    }

    /**
     * The registration decides the kind of fence, and the image's first bytes must agree: a raw
     * VM whose guest wrote qcow2's magic at its disk's start gets no qcow2 fence at the next
     * start (refused, naming why), and a QMP socket given for a raw image is refused too.
     */
    @Test
    void aRawImageWhoseGuestWroteQcow2sMagicGetsNoQcow2Fence() throws Exception {
        Path raw = dir.resolve("vm.raw");
        ok("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "/nonexistent", "-F", "raw", dir.resolve("fake.qcow2")
                .toString(), "1G");
        Files.write(raw, Files.readAllBytes(dir.resolve("fake.qcow2"))); // what the guest wrote at sector 0
        IllegalArgumentException noQmp = assertThrows(IllegalArgumentException.class,
                () -> ImageFence.of(image(raw, null), WriteTracker.newEpoch(), WriteTracker.Limits.DEFAULT));
        assertTrue(noQmp.getMessage().contains("registered raw"), noQmp.getMessage());
        Path plain = Files.write(dir.resolve("plain.raw"), new byte[8192]);
        IllegalArgumentException qmpForRaw = assertThrows(IllegalArgumentException.class,
                () -> ImageFence.of(image(plain, dir.resolve("qmp.sock")), WriteTracker.newEpoch(),
                        WriteTracker.Limits.DEFAULT));
        assertTrue(qmpForRaw.getMessage().contains("which is for qcow2 images"), qmpForRaw.getMessage());
    }

    /**
     * An image of another format QEMU writes, registered without a QMP socket, is not taken for
     * raw: its guest offsets are not the file's, and a reclaim would punch its header or another
     * guest block. Each is made by qemu-img, as an operator would.
     */
    @Test
    void anImageOfAnotherFormatIsNotReclaimedAsRaw() throws Exception {
        Map<String, String> formats = new LinkedHashMap<>();
        formats.put("qed", "QED");
        formats.put("vmdk", "VMDK");
        formats.put("vhdx", "VHDX");
        formats.put("vpc", "VPC (dynamic VHD)");
        formats.put("vdi", "VDI");
        formats.put("parallels", "Parallels (extended)");
        formats.put("luks", "LUKS");
        for (var f : formats.entrySet()) {
            Path img = dir.resolve("vm." + f.getKey());
            if (f.getKey().equals("luks")) {
                createLuks(img);
            } else {
                ok("qemu-img", "create", "-q", "-f", f.getKey(), img.toString(), "64M");
            }
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> ImageFence.of(image(img, null), WriteTracker.newEpoch(), WriteTracker.Limits.DEFAULT),
                    f.getKey());
            assertTrue(e.getMessage().contains("begins with " + f.getValue() + "'s magic"), e.getMessage());
        }
        // a VMDK descriptor names a flat extent, which is raw: the descriptor is what QEMU opens
        Path descriptor = dir.resolve("flat.vmdk");
        ok("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", descriptor.toString(), "64M");
        assertEquals("VMDK (descriptor)", ImageFence.otherFormat(descriptor));
        assertNull(ImageFence.otherFormat(dir.resolve("flat-flat.vmdk")));
        // a raw disk whose guest wrote LUKS's header at its start is not reclaimed either: refused, never punched
        Path raw = Files.write(dir.resolve("guest.raw"), new byte[8192]);
        assertNotNull(ImageFence.of(image(raw, null), WriteTracker.newEpoch(), WriteTracker.Limits.DEFAULT));
        byte[] sector0 = new byte[8192];
        try (var in = Files.newInputStream(dir.resolve("vm.luks"))) {
            assertEquals(sector0.length, in.readNBytes(sector0, 0, sector0.length));
        }
        Files.write(raw, sector0);
        assertThrows(IllegalArgumentException.class,
                () -> ImageFence.of(image(raw, null), WriteTracker.newEpoch(), WriteTracker.Limits.DEFAULT));
        assertNull(ImageFence.otherFormat(Files.write(dir.resolve("short.raw"), new byte[] {'Q', 'E'})));
    }

    /**
     * A LUKS image, by qemu-img. Its key derivation first times PBKDF2 on the thread's CPU clock,
     * and fails ("Unable to get accurate CPU usage") when that clock did not move, as it can on a
     * loaded machine with coarse CPU accounting (a CI run met it): tried again, up to five times.
     */
    private static void createLuks(Path img) throws Exception {
        String[] cmd = {"qemu-img", "create", "-q", "--object", "secret,id=s0,data=vm1", "-f", "luks", "-o",
            "key-secret=s0", img.toString(), "64M"};
        for (int i = 1; i < 5; i++) {
            Tools.Result r = Tools.run(cmd);
            if (r.ok()) {
                return;
            }
            if (!r.err().contains("Unable to get accurate CPU usage")) {
                break;
            }
        }
        ok(cmd);
    }

    @Test
    void aSymbolicLinkIsNotFollowed() throws Exception {
        Path raw = Files.write(dir.resolve("target.raw"), new byte[4096]);
        Path link = Files.createSymbolicLink(dir.resolve("link.raw"), raw);
        assertThrows(IOException.class, () -> ImageFence.of(image(link, null), WriteTracker.newEpoch(),
                WriteTracker.Limits.DEFAULT));
    }
}
