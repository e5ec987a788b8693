package vmfuse.fs;

/**
 * One open of an image through the mount: the backing descriptor it keeps for its life (every
 * read and write is one pread/pwrite on it), and the image's current name (for logs).
 */
final class OpenFile {
    final int fd;
    volatile String name;
    volatile boolean unlinked;

    OpenFile(int fd, String name) {
        this.fd = fd;
        this.name = name;
    }
}
