package vmfuse.fs.volume;

/** The way a volume was opened: through the FUSE mount or through the NBD socket. */
public enum Door {
    MOUNT("mount"), NBD("NBD socket");

    private final String label;

    Door(String label) {
        this.label = label;
    }

    public String label() {
        return label;
    }
}
