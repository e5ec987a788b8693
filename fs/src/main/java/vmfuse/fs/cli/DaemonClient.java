package vmfuse.fs.cli;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;

import vmfuse.fs.FsException;
import vmfuse.fs.control.Answer;
import vmfuse.fs.control.Request;
import vmfuse.fs.daemon.ControlServer;
import vmfuse.fs.daemon.StoreDir;
import vmfuse.fs.mount.MountPoints;
import vmfuse.fs.mount.MountTable;
import vmfuse.fs.nativeio.Native;

/** Talks to the daemon serving a mount point, through its control socket. */
final class DaemonClient {
    private DaemonClient() {}

    /**
     * Sends {@code request} to the daemon of {@code mountPoint} and returns its answer's lines;
     * fails with the reason (and the errno the daemon met) if there is no daemon or the request
     * failed. A field holding a tab, newline or carriage return (a name typed with one) is
     * refused here: it would split the request.
     */
    static List<Answer> request(Path mountPoint, Request request) throws FsException, IOException {
        String line = request.encode();
        Path mnt = mountPoint.toAbsolutePath().normalize();
        Optional<MountTable.Entry> entry = MountTable.at(mnt);
        if (entry.isEmpty() || !entry.get().isVmfuse()) {
            throw new FsException(Native.EINVAL, mnt + " is not a vmfuse mount");
        }
        if (MountPoints.probe(mnt) == MountPoints.State.STALE) {
            throw new FsException(Native.ENOTCONN, "the mount at " + mnt + " is stale (its daemon is gone); "
                    + "clear it with 'fusermount -u " + mnt + "' or 'vmfuse mount --force'");
        }
        StoreDir store = new StoreDir(Path.of(entry.get().source()));
        String answer;
        try {
            answer = ControlServer.request(store.socket(), line);
        } catch (IOException e) {
            throw new FsException(Native.EIO, "cannot reach the daemon of " + mnt + " at " + store.socket() + ": "
                    + e.getMessage());
        }
        return Answer.decode(answer);
    }

    /** The one line of type {@code type} an answer must hold. */
    static <T extends Answer> T one(List<Answer> answer, Class<T> type) throws FsException {
        for (Answer a : answer) {
            if (type.isInstance(a)) {
                return type.cast(a);
            }
        }
        throw new FsException(Native.EIO, "the daemon's answer holds no " + type.getSimpleName() + ": " + answer);
    }
}
