package vmfuse.fs.cli;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Optional;

import vmfuse.fs.FsException;
import vmfuse.fs.TsvField;
import vmfuse.fs.daemon.ControlServer;
import vmfuse.fs.daemon.MountPoints;
import vmfuse.fs.daemon.MountTable;
import vmfuse.fs.daemon.Store;
import vmfuse.fs.nativeio.Native;

/** Talks to the daemon serving a mount point, through its control socket. */
final class DaemonClient {
    private DaemonClient() {}

    /**
     * Sends one request, its fields joined by tabs on one line, to the daemon of {@code mountPoint};
     * fails with the reason if there is none. A field holding a tab, newline or carriage return
     * (a name typed with one) is refused here: it would split the request.
     */
    static String request(Path mountPoint, String... fields) throws FsException, IOException {
        for (String f : fields) {
            if (TsvField.splits(f)) {
                throw new FsException(Native.EINVAL, "'" + TsvField.escape(f)
                        + "' holds a tab, newline or carriage return; names given to vmfuse may not");
            }
        }
        String line = String.join("\t", fields);
        Path mnt = mountPoint.toAbsolutePath().normalize();
        Optional<MountTable.Entry> entry = MountTable.at(mnt);
        if (entry.isEmpty() || !entry.get().isVmfuse()) {
            throw new FsException(Native.EINVAL, mnt + " is not a vmfuse mount");
        }
        if (MountPoints.probe(mnt) == MountPoints.State.STALE) {
            throw new FsException(Native.ENOTCONN, "the mount at " + mnt + " is stale (its daemon is gone); "
                    + "clear it with 'fusermount -u " + mnt + "' or 'vmfuse mount --force'");
        }
        Store store = new Store(Path.of(entry.get().source()));
        String answer;
        try {
            answer = ControlServer.request(store.socket(), line);
        } catch (IOException e) {
            throw new FsException(Native.EIO, "cannot reach the daemon of " + mnt + " at " + store.socket() + ": "
                    + e.getMessage());
        }
        if (answer.startsWith("error ")) {
            throw new FsException(Native.EINVAL, answer.substring("error ".length()).trim());
        }
        return answer;
    }
}
