package vmfuse.reclaimer;

import static java.nio.charset.StandardCharsets.US_ASCII;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SeekableByteChannel;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.Map;
import java.util.function.LongSupplier;

/**
 * The fence that suits an image, chosen by its format, with what goes with it. A raw image's
 * guest offsets are the file's: its writes are counted in the filesystem (a {@link RawFence} over
 * a {@link WriteTracker} the caller routes the image's writes through), and a clean stop is
 * recorded with the image's {@link ImageIdentity}. A qcow2 image's guest offsets only its QEMU
 * can map: QEMU keeps a dirty bitmap per token ({@link QemuFence}, over the VM's QMP socket), and
 * those bitmaps prove the fence across restarts.
 *
 * @param tracker  a raw image's write tracker, null for qcow2
 * @param identity a raw image's identity, null for qcow2
 * @param diskSize the guest disk's size: a raw image's length, a qcow2 image's virtual size
 */
public record ImageFence(Fence fence, WriteTracker tracker, ImageIdentity identity, LongSupplier diskSize) {
    static final int QCOW2_MAGIC = 0x514649fb;

    /**
     * Where the fence reaches an image and its VM.
     *
     * @param backingFile the image's file in the store
     * @param mountedFile the same image as its QEMU opens it (through the mount)
     * @param qmpSocket   the VM's QMP socket; null if none was given (refused for qcow2)
     * @param nbdSocket   where a qcow2 carry-out exports the image
     * @param allocated   the image file's allocated bytes now
     * @param length      the image file's length now
     * @param hold        keeps processes off a qcow2 image no QEMU runs
     * @param puncher     punches the image file
     */
    public record Image(String name, Path backingFile, Path mountedFile, Path qmpSocket, Path nbdSocket,
            LongSupplier allocated, LongSupplier length, ImageHold hold, Puncher puncher) {}

    /**
     * The fence of {@code image}; a raw image's tracker counts from {@code epoch} within
     * {@code limits}. The VM's registration says which the image is: with a QMP socket, qcow2;
     * without, raw. IllegalArgumentException, naming what to give, where the image's first bytes
     * say otherwise: never a fence of the other kind. A raw image registered with a QMP socket
     * was served raw until its guest wrote qcow2's magic at its disk's start, and then as qcow2
     * (found by a review: the offline path had qemu-nbd open the backing file that guest's header
     * named); such a registration is refused now.
     */
    public static ImageFence of(Image image, long epoch, WriteTracker.Limits limits) throws IOException {
        boolean qcow2 = isQcow2(image.backingFile());
        if (image.qmpSocket() != null && !qcow2) {
            throw new IllegalArgumentException("image " + image.name() + " does not begin with qcow2's magic, but the "
                    + "VM was given a QMP socket, which is for qcow2 images: a raw image is reclaimed without one "
                    + "(and an image of another format is not reclaimed)");
        }
        if (!qcow2) {
            String other = otherFormat(image.backingFile());
            if (other != null) {
                throw new IllegalArgumentException("image " + image.name() + " begins with " + other + "'s magic: its "
                        + "guest offsets are not the file's, so it is not reclaimed (only raw and qcow2 images are); "
                        + "if it is a raw disk whose guest wrote that at its start, it is not reclaimed either");
            }
            WriteTracker tracker = new WriteTracker(epoch, limits);
            return new ImageFence(new RawFence(tracker, image.puncher()), tracker, new ImageIdentity(image.backingFile()),
                    image.length());
        }
        if (image.qmpSocket() == null) {
            throw new IllegalArgumentException("image " + image.name() + " is qcow2: its reclaim goes through QEMU, "
                    + "give the VM's QMP socket (--qmp-socket PATH, QEMU's -qmp unix:PATH,server=on,wait=off); "
                    + "if the VM was registered raw, its guest wrote qcow2's magic at the start of its disk, "
                    + "and the image is not reclaimed");
        }
        QemuFence fence = new QemuFence(image.qmpSocket(), image.mountedFile(), image.backingFile(), image.nbdSocket(),
                image.allocated(), image.hold(), image.puncher());
        fence.resumeIfLeftPaused();
        return new ImageFence(fence, null, null, () -> {
            try {
                return Qcow2Map.headerSize(image.backingFile()); // the virtual size, which QEMU keeps in the header
            } catch (IOException e) {
                return 0;
            }
        });
    }

    /** Whether {@code file} begins with qcow2's magic (a symbolic link is not followed: refused). */
    static boolean isQcow2(Path file) throws IOException {
        ByteBuffer b = head(file, 4);
        return b.limit() == 4 && b.getInt(0) == QCOW2_MAGIC;
    }

    /**
     * The formats QEMU writes, other than raw and qcow2, by the magic their images begin with (as
     * QEMU's block drivers probe them). Such an image is a file of that format whose guest offsets
     * are not the file's: taken for raw, a reclaim would punch the file at the guest's offsets,
     * into the format's metadata or another guest block (a LUKS image's payload starts after its
     * header, at 2 MiB or more). A VDI image's signature is at 0x40; a fixed VHD, whose footer is
     * at its end and whose offsets are the file's, is raw to this check, as it is for the punch.
     */
    private static final Map<String, byte[]> MAGIC_AT_0 = Map.of(
            "LUKS", new byte[] {'L', 'U', 'K', 'S', (byte) 0xba, (byte) 0xbe},
            "QED", new byte[] {'Q', 'E', 'D', 0},
            "VMDK", "KDMV".getBytes(US_ASCII),
            "VMDK (descriptor)", "# Disk DescriptorFile".getBytes(US_ASCII),
            "VHDX", "vhdxfile".getBytes(US_ASCII),
            "VPC (dynamic VHD)", "conectix".getBytes(US_ASCII),
            "Parallels", "WithoutFreeSpace".getBytes(US_ASCII),
            "Parallels (extended)", "WithouFreSpacExt".getBytes(US_ASCII));
    private static final int VDI_SIGNATURE_AT = 0x40;
    private static final int VDI_SIGNATURE = 0xbeda107f;

    /** The format other than raw and qcow2 that {@code file} begins with the magic of; null if none. */
    static String otherFormat(Path file) throws IOException {
        ByteBuffer b = head(file, VDI_SIGNATURE_AT + 4);
        byte[] start = new byte[b.limit()];
        b.get(0, start);
        for (var m : MAGIC_AT_0.entrySet()) {
            if (start.length >= m.getValue().length
                    && Arrays.equals(start, 0, m.getValue().length, m.getValue(), 0, m.getValue().length)) {
                return m.getKey();
            }
        }
        if (b.limit() == VDI_SIGNATURE_AT + 4
                && b.order(ByteOrder.LITTLE_ENDIAN).getInt(VDI_SIGNATURE_AT) == VDI_SIGNATURE) {
            return "VDI";
        }
        return null;
    }

    /** Up to {@code n} first bytes of {@code file} (fewer if it is shorter); a symbolic link is refused. */
    private static ByteBuffer head(Path file, int n) throws IOException {
        try (SeekableByteChannel ch = Files.newByteChannel(file, StandardOpenOption.READ, LinkOption.NOFOLLOW_LINKS)) {
            ByteBuffer b = ByteBuffer.allocate(n);
            while (b.hasRemaining() && ch.read(b) > 0) {
                // a short read: once more
            }
            return b.flip();
        }
    }
}
