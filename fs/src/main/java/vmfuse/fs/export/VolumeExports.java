package vmfuse.fs.export;

import static vmfuse.fs.nativeio.Native.EINVAL;
import static vmfuse.fs.nativeio.Native.ENOENT;
import static vmfuse.fs.nativeio.Native.O_RDWR;

import java.util.ArrayList;
import java.util.List;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import vmfuse.fs.FsException;
import vmfuse.fs.Node;
import vmfuse.fs.images.ImageFiles;
import vmfuse.fs.images.ImagesDir;
import vmfuse.fs.journals.JournalFiles;
import vmfuse.fs.volume.Door;
import vmfuse.fs.volume.ImageVolume;
import vmfuse.nbd.Export;
import vmfuse.nbd.ExportException;
import vmfuse.nbd.Exports;
import vmfuse.nbd.Peer;

/**
 * The NBD door's exports: every image and journal device of the store, named by its path in the
 * mount ("images/tenant1/vm7/disk.raw", "journals/vm7"), opened through the same core as the FUSE
 * door ({@link ImageFiles}, {@link JournalFiles}), so an NBD client's open is an open like any:
 * counted in status, held off while the reclaimer holds the image, its image kept from renames
 * while it is a VM's. Who sees what is the {@link ExportRegistry}'s: root every volume, any other
 * user the volumes of its exports; a volume's requests go in its export's share of the scheduler.
 */
public final class VolumeExports implements Exports {
    private static final Logger log = LoggerFactory.getLogger(VolumeExports.class);

    private final ImagesDir dir;
    private final ImageFiles images;
    private final JournalFiles journals;
    private final ExportRegistry registry;

    public VolumeExports(ImagesDir dir, ImageFiles images, JournalFiles journals, ExportRegistry registry) {
        this.dir = dir;
        this.images = images;
        this.journals = journals;
        this.registry = registry;
    }

    /** Root, and users with an export; anyone else could see nothing. */
    @Override
    public boolean admits(Peer peer) {
        return peer.user() != null && registry.isRoot(peer.user())
                || !registry.volumesOf(peer.user(), peer.tlsIdentity()).isEmpty();
    }

    @Override
    public List<String> names(Peer peer) {
        if (peer.user() == null || !registry.isRoot(peer.user())) {
            return registry.volumesOf(peer.user(), peer.tlsIdentity()).stream().filter(this::exists).toList();
        }
        List<String> out = new ArrayList<>();
        try {
            for (String image : dir.images()) {
                out.add(Node.IMAGES + "/" + image);
            }
        } catch (FsException e) {
            log.warn("nbd list: images cannot be listed: {}", e.getMessage());
        }
        for (String device : journals.list()) {
            out.add(Node.JOURNALS + "/" + device);
        }
        return out;
    }

    @Override
    public boolean visible(Peer peer, String name) {
        return registry.allows(peer.user(), peer.tlsIdentity(), name) && exists(name);
    }

    /** The export holding the volume, or the volume itself if none does (root's use of it). */
    @Override
    public String share(String name) {
        String owner = registry.owner(name);
        return owner == null ? name : owner;
    }

    private boolean exists(String name) {
        try {
            checkExists(name);
            return true;
        } catch (FsException e) {
            return false;
        }
    }

    /**
     * Checks that {@code volume} (images/PATH, journals/NAME) is an image or a journal device now:
     * EINVAL naming it if it is neither kind of name, ENOENT if there is none.
     */
    public void checkExists(String volume) throws FsException {
        Node n = Node.resolve("/" + volume);
        boolean there = switch (n.kind()) {
            case IMAGE_ENTRY -> dir.exists(n.name());
            case JOURNAL -> journals.list().contains(n.name());
            default -> throw new FsException(EINVAL, "'" + volume + "' is neither images/PATH nor journals/NAME");
        };
        if (!there) {
            throw new FsException(ENOENT, "no " + (n.kind() == Node.Kind.JOURNAL ? "journal device " : "image ")
                    + volume);
        }
    }

    @Override
    public Export open(Peer peer, String name) throws ExportException {
        if (!registry.allows(peer.user(), peer.tlsIdentity(), name)) {
            return null; // to this client it does not exist
        }
        Node n;
        try {
            n = Node.resolve("/" + name);
        } catch (FsException e) {
            return null; // not a name of the namespace: no such export
        }
        try {
            return switch (n.kind()) {
                case IMAGE_ENTRY -> {
                    if (!dir.exists(n.name())) {
                        yield null;
                    }
                    ImageVolume v = images.open(n.name(), O_RDWR, Door.NBD);
                    yield new VolumeExport(v, () -> images.claimWriter(v, Door.NBD));
                }
                case JOURNAL -> new VolumeExport(journals.open(n.name()), () -> { });
                default -> null;
            };
        } catch (FsException e) {
            if (e.errno() == ENOENT) {
                return null;
            }
            throw new ExportException(e.errno(), e.getMessage());
        }
    }
}
