package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** QEMU's own image locking through the mount: a second writer is refused, as on a plain filesystem. */
class ImageLockingTest extends OnOneMount {

    /** A paused QEMU (-S) that holds the image for writing, as a running VM does. */
    private static Proc.Background holdWithQemu(String image, String format) throws Exception {
        Proc.Background qemu = Proc.start("qemu-system-x86_64", "-accel", "tcg", "-S", "-nodefaults",
                "-display", "none", "-monitor", "none", "-serial", "none",
                "-drive", "file=" + m.image(image) + ",format=" + format + ",if=virtio");
        // QEMU takes its locks while it opens the image; wait until a writer would see them
        Poll.until(() -> !Proc.run("qemu-io", "-f", format, "-c", "read 0 512",
                m.image(image).toString()).ok() || !qemu.process.isAlive(), () -> "QEMU's lock on " + image);
        assertTrue(qemu.process.isAlive(), "QEMU exited:\n" + qemu.output());
        return qemu;
    }

    @Test
    void secondWriterIsRefusedWhileAVmHoldsTheImage() throws Exception {
        for (String format : new String[] {"raw", "qcow2"}) {
            String image = "lock." + format;
            Proc.ok("qemu-img", "create", "-f", format, m.image(image).toString(), "64M");
            try (Proc.Background qemu = holdWithQemu(image, format)) {
                Proc.Result second = Proc.run("qemu-io", "-f", format, "-c", "write 0 4k", m.image(image).toString());
                assertFalse(second.ok(), "a second writer got in");
                assertTrue(second.err().contains("Failed to get \"write\" lock"), second.describe());
                // the same refusal a plain filesystem gives: -U (force-share) reads are still allowed
                Proc.ok("qemu-io", "-U", "-f", format, "-r", "-c", "read 0 4k", m.image(image).toString());
            }
            // the VM is gone: its locks went with it, the image is writable again
            Proc.ok("qemu-io", "-f", format, "-c", "write -P 7 0 4k", m.image(image).toString());
        }
    }

    @Test
    void nativeFilesystemRefusesTheSameWay() throws Exception {
        // the baseline the test above compares with, on the host directory itself
        java.nio.file.Path img = m.root.resolve("native.raw");
        Proc.ok("qemu-img", "create", "-f", "raw", img.toString(), "16M");
        try (Proc.Background qemu = Proc.start("qemu-system-x86_64", "-accel", "tcg", "-S", "-nodefaults",
                "-display", "none", "-monitor", "none", "-serial", "none",
                "-drive", "file=" + img + ",format=raw,if=virtio")) {
            Poll.until(() -> !Proc.run("qemu-io", "-f", "raw", "-c", "read 0 512", img.toString()).ok(),
                    () -> "QEMU's lock on " + img + "\n" + qemu.output());
            Proc.Result second = Proc.run("qemu-io", "-f", "raw", "-c", "write 0 4k", img.toString());
            assertTrue(second.err().contains("Failed to get \"write\" lock"), second.describe());
        }
    }
}
