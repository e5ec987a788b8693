package vmfuse.fs.cli;

import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import vmfuse.fs.TsvField;
import vmfuse.fs.control.Answer;
import vmfuse.fs.control.Request;

@Command(name = "journal", mixinStandardHelpOptions = true,
        description = "Journal devices: sparse block devices under MOUNTPOINT/journals, for ext4 external journals.",
        subcommands = {JournalCommand.Create.class, JournalCommand.ListDevices.class, JournalCommand.Checkpoint.class,
            JournalCommand.Reopen.class})
final class JournalCommand {

    @Command(name = "create", mixinStandardHelpOptions = true,
            description = {"Create a journal device of SIZE bytes (nothing is stored until written).",
                "The same as 'truncate -s SIZE MOUNTPOINT/journals/NAME', with a durability of its own."},
            footer = {"", "Example:", "  vmfuse journal create --size 128M vm1 /srv/vmfuse"})
    static final class Create implements Callable<Integer> {
        @Option(names = "--size", required = true, paramLabel = "SIZE", description = "e.g. 128M, 1G (powers of 1024).")
        String size;

        @Option(names = "--durability", paramLabel = "MODE", defaultValue = "flush",
                description = "flush (default: data survive a crash once fsync returns) or close (memory speed; "
                        + "persisted on close, unmount and a timer).")
        String durability;

        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Parameters(index = "1", paramLabel = "MOUNTPOINT")
        Path mountPoint;

        @Override
        public Integer call() throws Exception {
            DaemonClient.request(mountPoint, new Request.JournalCreate(name, size, durability));
            return 0;
        }
    }

    @Command(name = "checkpoint", mixinStandardHelpOptions = true,
            description = {"Commit every journal device's blocks held in memory to the store now, as the daemon does "
                + "every " + vmfuse.fs.daemon.Daemon.CHECKPOINT_SECONDS + " s, when a redo log segment fills and at "
                + "unmount. On a terminal, shows how much it has written."})
    static final class Checkpoint implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "MOUNTPOINT")
        Path mountPoint;

        @Override
        public Integer call() throws Exception {
            try (TerminalProgress progress = new TerminalProgress()) {
                checkpoint(mountPoint, progress);
            }
            return 0;
        }
    }

    @Command(name = "reopen", mixinStandardHelpOptions = true,
            description = {"Open the journal store's files again in place, as a remount would, while images and "
                + "journal devices stay mounted and their VMs run.",
                "For a store a disk error broke: a read of its index failed part way through a change, and it "
                + "takes no commits ('vmfuse journal list' says why); or an fdatasync of its redo log failed, and "
                + "every flush fails since. The daemon does it on its own too, at its next checkpoint, at most once "
                + "a minute.",
                "A device in flush mode loses nothing, and its open handles go on. A device in close mode written "
                + "since its last checkpoint loses those writes: its open handles fail (EIO) from then on, and the "
                + "next open gets it as that checkpoint left it. On a store that is not broken, a checkpoint "
                + "commits everything first, and nothing is lost."},
            footer = {"", "Exit status: 0 once the store is open again; 1 if not: refused while the store's files "
                + "still fail reads or the disk refuses its commit (the store goes on as it was), or failed after "
                + "it closed them (every journal device fails until a reopen succeeds, or a remount)."})
    static final class Reopen implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "MOUNTPOINT")
        Path mountPoint;

        @Spec
        CommandSpec spec;

        @Override
        public Integer call() throws Exception {
            for (Answer a : DaemonClient.request(mountPoint, new Request.JournalReopen())) {
                if (a instanceof Answer.JournalReopened r) {
                    spec.commandLine().getOut().println("journal store opened again in place" + (r.lostDevices() == 0
                            ? "; no device lost anything"
                            : "; " + r.lostDevices() + " close-mode device(s) lost what was written since their last "
                                    + "checkpoint (their open handles fail until opened again; the daemon's log names them)"));
                }
            }
            return 0;
        }
    }

    /**
     * A checkpoint of the journal store of the mount at {@code mnt}. On a terminal, it shows the
     * blocks it wrote of those in memory when it began, as the store's memory drains (writers
     * that come meanwhile add to it: what they add is not counted).
     */
    static void checkpoint(Path mnt, TerminalProgress progress) throws Exception {
        Request checkpoint = new Request.JournalCheckpoint();
        long held = progress.on() ? memoryHeld(mnt) : -1;
        if (held <= 0) { // nothing to show
            DaemonClient.request(mnt, checkpoint);
            return;
        }
        TerminalProgress.during(() -> DaemonClient.request(mnt, checkpoint), () -> {
            long now = memoryHeld(mnt);
            if (now >= 0) {
                progress.show("journal checkpoint: wrote " + TerminalProgress.mib(Math.max(0, held - now), held));
            }
        });
        progress.show("journal checkpoint: wrote " + TerminalProgress.mib(held, held));
    }

    /** Journal blocks the daemon holds in memory; -1 if it did not say. */
    private static long memoryHeld(Path mnt) {
        try {
            for (Answer a : DaemonClient.request(mnt, new Request.Journals())) {
                if (a instanceof Answer.JournalStore s) {
                    return s.memoryHeld();
                }
            }
        } catch (Exception e) {
            // the checkpoint's own answer says what went wrong
        }
        return -1;
    }

    @Command(name = "list", mixinStandardHelpOptions = true,
            description = {"List the journal devices: size, bytes stored, memory used, durability, last flush."})
    static final class ListDevices implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "MOUNTPOINT")
        Path mountPoint;

        @Spec
        CommandSpec spec;

        @Override
        public Integer call() throws Exception {
            List<String[]> rows = new ArrayList<>();
            rows.add(new String[] {"NAME", "SIZE", "STORED", "MEMORY", "DURABILITY", "LAST FLUSH"});
            String footer = null;
            String broken = null;
            for (Answer a : DaemonClient.request(mountPoint, new Request.Journals())) {
                if (a instanceof Answer.JournalStore s) {
                    footer = String.format("blocks in memory: %.1f MiB of %.1f MiB (--journal-memory; %.1f MiB allocated "
                            + "outside the heap); store on disk: %.1f MiB; %d checkpoints since mount",
                            mib(s.memoryHeld()), mib(s.memoryLimit()), mib(s.memoryAllocated()), mib(s.bytesOnDisk()),
                            s.checkpoints()) + (s.reopens() > 0 ? "; opened again in place " + s.reopens() + " time(s)" : "");
                    broken = s.broken();
                } else if (a instanceof Answer.Journal j) {
                    rows.add(new String[] {TsvField.escape(j.name()), "" + j.size(), "" + j.stored(), "" + j.memory(),
                        j.durability(), j.lastFlush() == 0 ? "never" : Instant.ofEpochMilli(j.lastFlush()).toString()});
                }
            }
            TextTable.print(spec.commandLine().getOut(), rows, true, false, false, false, true, true);
            if (footer != null) {
                spec.commandLine().getOut().println(footer);
            }
            if (broken != null) {
                spec.commandLine().getOut().println("BROKEN: " + broken + " (vmfuse journal reopen " + mountPoint + ")");
            }
            return 0;
        }

        private static double mib(long bytes) {
            return bytes / (double) (1 << 20);
        }
    }
}
