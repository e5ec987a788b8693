package vmfuse.fs.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import vmfuse.fs.FsException;
import vmfuse.fs.TsvField;
import vmfuse.fs.daemon.StoreDir;
import vmfuse.fs.mount.Fusermount;
import vmfuse.fs.mount.MountTable;
import vmfuse.fs.nativeio.Native;

@Command(name = "umount", aliases = "unmount", mixinStandardHelpOptions = true,
        description = {"Unmount a vmfuse mount and wait for its daemon to exit.",
            "The daemon syncs the backing filesystem before it exits, so once this returns,",
            "everything written through the mount is on stable storage. A busy mount (QEMU still",
            "has an image open) is left mounted and the command fails.",
            "On a terminal, it first has the daemon checkpoint its journal devices' blocks in memory",
            "(as 'vmfuse journal checkpoint' does), showing how much it wrote, so that what is left for",
            "the daemon after the unmount is short; in a pipe or a script, the daemon does it all after."})
final class UmountCommand implements Callable<Integer> {

    @Parameters(index = "0", paramLabel = "MOUNTPOINT")
    Path mountPoint;

    @Option(names = "--timeout", paramLabel = "SECONDS", defaultValue = "60",
            description = "How long to wait for the daemon to exit (default: ${DEFAULT-VALUE}).")
    long timeoutSeconds;

    @Override
    public Integer call() throws Exception {
        Path mnt = mountPoint.toAbsolutePath().normalize();
        Optional<MountTable.Entry> entry = MountTable.at(mnt);
        if (entry.isEmpty() || !entry.get().isVmfuse()) {
            throw new FsException(Native.EINVAL, "cannot unmount " + mnt + ": not a vmfuse mount");
        }
        StoreDir store = new StoreDir(Path.of(entry.get().source()));
        Optional<ProcessHandle> daemon = daemonOf(store, mnt);
        try (TerminalProgress progress = new TerminalProgress()) {
            if (progress.on() && daemon.isPresent()) {
                try {
                    JournalCommand.checkpoint(mnt, progress);
                } catch (FsException | java.io.IOException e) {
                    progress.show("journal checkpoint before the unmount failed (" + e.getMessage()
                            + "); the daemon tries again after it");
                }
            }
        }
        try {
            Fusermount.unmount(mnt, false);
        } catch (FsException e) {
            String hint = e.errno() == Native.EBUSY ? " (a program still uses it; see: fuser -vm " + mnt + ")" : "";
            throw new FsException(e.errno(), "cannot unmount " + mnt + ": " + e.getMessage() + hint);
        }
        if (daemon.isPresent()) {
            try {
                daemon.get().onExit().get(timeoutSeconds, TimeUnit.SECONDS);
            } catch (java.util.concurrent.TimeoutException e) {
                throw new FsException(Native.EBUSY, "unmounted " + mnt + ", but daemon pid " + daemon.get().pid()
                        + " did not exit within " + timeoutSeconds + " s");
            }
            Optional<String> failure = failure(store, daemon.get().pid());
            if (failure.isPresent()) {
                throw new FsException(Native.EIO, "unmounted " + mnt + ", but " + failure.get() + " (see "
                        + store.log() + ")");
            }
        }
        return 0;
    }

    /** What the daemon {@code pid} recorded as failing in its unmount, if it did; nothing if it said ok. */
    static Optional<String> failure(StoreDir store, long pid) {
        try {
            String[] f = Files.readString(store.unmountRecord()).trim().split("\t", 3);
            if (f.length == 3 && f[0].equals(Long.toString(pid)) && f[1].equals("failed")) {
                return Optional.of(TsvField.unescape(f[2]));
            }
            if (f.length >= 2 && f[0].equals(Long.toString(pid))) {
                return Optional.empty();
            }
        } catch (java.io.IOException | RuntimeException e) {
            // no record: see below
        }
        return Optional.of("daemon pid " + pid + " exited without saying how its unmount went (killed?)");
    }

    /** The daemon serving {@code mnt}, from the store's pid file, if it is still running. */
    static Optional<ProcessHandle> daemonOf(StoreDir store, Path mnt) {
        // no pid file: the daemon is gone (a stale mount) or never got that far
        return store.readPid().filter(d -> mnt.equals(d.mountPoint()))
                .flatMap(d -> ProcessHandle.of(d.pid())).filter(ProcessHandle::isAlive);
    }
}
