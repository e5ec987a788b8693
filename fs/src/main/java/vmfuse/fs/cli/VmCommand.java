package vmfuse.fs.cli;

import java.nio.file.Path;
import java.util.concurrent.Callable;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import vmfuse.fs.FsException;
import vmfuse.fs.control.Answer;
import vmfuse.fs.control.Request;
import vmfuse.fs.nativeio.Native;

@Command(name = "vm", mixinStandardHelpOptions = true,
        description = "VMs whose deleted space the reclaimer gives back while they run (their agents report deletions).",
        subcommands = {VmCommand.Add.class, VmCommand.Remove.class, VmCommand.Reclaim.class})
final class VmCommand {

    @Command(name = "add", mixinStandardHelpOptions = true,
            description = {"Serve a VM's agent: listen on its agent socket (QEMU's virtio-serial chardev connects to it),",
                "log its deletion notices durably and punch what it deleted in its image, never what it wrote since.",
                "A qcow2 image needs the VM's QMP socket: QEMU keeps the fence (persistent dirty bitmaps stored in",
                "the image) and discards while it runs; with no QEMU running, the daemon punches the image itself.",
                "Per-VM counts are in 'vmfuse status'."},
            footer = {"", "Example:",
                "  vmfuse vm add vm1 --image images/vm1.raw --agent-socket /run/vmfuse/vm1.agent /srv/vmfuse",
                "  qemu-system-x86_64 ... -drive file=/srv/vmfuse/images/vm1.raw,format=raw,if=none,id=d0 \\",
                "      -device virtio-blk-pci,drive=d0 -chardev socket,id=ag,path=/run/vmfuse/vm1.agent,reconnect=2 \\",
                "      -device virtio-serial -device virtserialport,chardev=ag,name=vmfuse.agent"})
    static final class Add implements Callable<Integer> {
        @Option(names = "--image", required = true, paramLabel = "IMAGE",
                description = "images/PATH in the mount (in folders too: images/tenant1/vm7/disk.raw).")
        String image;

        @Option(names = "--agent-socket", required = true, paramLabel = "PATH",
                description = "Unix socket the daemon listens on for the VM's agent (absolute).")
        Path agentSocket;

        @Option(names = "--agent-user", paramLabel = "USER", defaultValue = "root",
                description = "The user QEMU runs as: it owns the agent socket (mode 0600), and only it (or root) may "
                        + "connect; the peer's credentials are checked at each connection (default: ${DEFAULT-VALUE}).")
        String agentUser;

        @Option(names = "--agent-group", paramLabel = "GROUP",
                description = "A group whose members may connect too (the socket's group, mode 0660).")
        String agentGroup;

        @Option(names = "--qmp-socket", paramLabel = "PATH",
                description = "The VM's QMP socket (QEMU's -qmp unix:PATH,server=on,wait=off): needed for a qcow2 "
                        + "image, whose deleted ranges QEMU discards itself.")
        Path qmpSocket;

        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Parameters(index = "1", paramLabel = "MOUNTPOINT")
        Path mountPoint;

        @Override
        public Integer call() throws Exception {
            if (agentUser.contains(":") || (agentGroup != null && agentGroup.contains(":"))) {
                throw new FsException(Native.EINVAL, "a user or group name has no ':'");
            }
            DaemonClient.request(mountPoint, new Request.VmAdd(name, image, agentSocket.toAbsolutePath().toString(),
                    qmpSocket == null ? null : qmpSocket.toAbsolutePath().toString(),
                    agentGroup == null ? agentUser : agentUser + ":" + agentGroup));
            return 0;
        }
    }

    @Command(name = "remove", mixinStandardHelpOptions = true,
            description = {"Stop serving a VM's agent. Its notices still waiting are dropped (its writes are no longer",
                "watched, so they could not be punched safely later)."})
    static final class Remove implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Parameters(index = "1", paramLabel = "MOUNTPOINT")
        Path mountPoint;

        @Override
        public Integer call() throws Exception {
            DaemonClient.request(mountPoint, new Request.VmRemove(name));
            return 0;
        }
    }

    @Command(name = "reclaim", mixinStandardHelpOptions = true,
            description = {"Carry out a VM's waiting notices now, whatever the threshold: before a backup or a copy of",
                "the image, or when its VM is shut down. What the guest wrote since a notice's fence is kept, as",
                "always. A qcow2 image no QEMU runs is held closed meanwhile (opens of it wait).",
                "Prints the bytes punched, the bytes of disk freed and the bytes still waiting, and on stderr the",
                "bytes of notices dropped instead of punched (a fence that cannot be proved, a corrupt qcow2 image)."},
            footer = {"", "Exit status: 0 when done; 1 if what waits could not go (the reason is printed; it waits on)."})
    static final class Reclaim implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Parameters(index = "1", paramLabel = "MOUNTPOINT")
        Path mountPoint;

        @Override
        public Integer call() throws Exception {
            Answer.Reclaimed r;
            try (TerminalProgress progress = new TerminalProgress()) {
                r = progress.on() ? reclaimShowingProgress(progress) : reclaim();
            }
            System.out.printf("vm %s: punched %d bytes, freed %d bytes, %d bytes still waiting%n", name, r.punched(),
                    r.freed(), r.pending());
            if (r.dropped() != 0) {
                System.err.printf("vmfuse: vm %s: notices of %d bytes dropped, never punched: what the guest wrote since "
                        + "their fence could not be proved, or the image's metadata is not to be trusted (the daemon's "
                        + "log says which)%n", name, r.dropped());
            }
            return 0;
        }

        private Answer.Reclaimed reclaim() throws Exception {
            return DaemonClient.one(DaemonClient.request(mountPoint, new Request.VmReclaim(name)), Answer.Reclaimed.class);
        }

        /** On a terminal: the bytes carried out of those waiting, from the VM's status, while the request runs. */
        private Answer.Reclaimed reclaimShowingProgress(TerminalProgress progress) throws Exception {
            long waiting = pending();
            if (waiting <= 0) {
                return reclaim();
            }
            Answer.Reclaimed r = TerminalProgress.during(this::reclaim, () -> {
                long left = pending();
                if (left >= 0) { // -1: status did not answer this time; the line stays as it was
                    progress.show("vm " + name + ": carried out " + TerminalProgress.mib(Math.max(0, waiting - left),
                            waiting));
                }
            });
            progress.show("vm " + name + ": carried out " + TerminalProgress.mib(Math.max(0, waiting - r.pending()),
                    waiting));
            return r;
        }

        /** The VM's bytes waiting, as status has them; -1 if it has none for the VM. */
        private long pending() {
            try {
                for (Answer a : DaemonClient.request(mountPoint, new Request.Status())) {
                    if (a instanceof Answer.Vm v && v.name().equals(name)) {
                        return v.pending();
                    }
                }
            } catch (Exception e) {
                // the reclaim's own answer says what went wrong
            }
            return -1;
        }
    }
}
