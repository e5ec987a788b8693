package vmfuse.fs.images;

/**
 * One open of an image through the mount: the backing descriptor it keeps for its life (every
 * read and write is one pread/pwrite on it), and the image's current name (for logs).
 */
public final class OpenFile {
    public final int fd;
    public volatile String name;
    public volatile boolean unlinked;

    public OpenFile(int fd, String name) {
        this.fd = fd;
        this.name = name;
    }
}
