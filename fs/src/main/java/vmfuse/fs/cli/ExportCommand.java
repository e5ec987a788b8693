package vmfuse.fs.cli;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import vmfuse.fs.FsException;
import vmfuse.fs.control.Answer;
import vmfuse.fs.control.Request;
import vmfuse.fs.nativeio.Native;

@Command(name = "export", mixinStandardHelpOptions = true,
        description = {"Tenants of the NBD door (mount --nbd): which user's clients see and open which images and",
            "journal devices, and their part of the disk. Root sees every volume; any other user only its",
            "exports' volumes (the others do not exist for it: not listed, not opened). Kept in the store",
            "(exports.tsv) across remounts; the counts are in 'vmfuse status'."},
        subcommands = {ExportCommand.Add.class, ExportCommand.Set.class, ExportCommand.Remove.class})
final class ExportCommand {

    /** The scheduler's three controls, as add and set take them. */
    static final class Controls {
        @Option(names = "--weight", paramLabel = "N",
                description = "Its part of the disk against the other exports asking for it, 1..1000 (default 1).")
        Integer weight;

        @Option(names = "--reservation-iops", paramLabel = "N",
                description = "Requests a second it gets whatever the others ask, when it asks for them (0: none).")
        Long reservation;

        @Option(names = "--limit-iops", paramLabel = "N",
                description = "Requests a second it never gets more than, even with the disk idle (0: none).")
        Long limit;
    }

    @Command(name = "add", mixinStandardHelpOptions = true,
            description = {"Give the clients of user UID the volumes named: they see them in their NBD list and open them",
                "(nbd+unix:///images/PATH?socket=...); the requests of all of them are scheduled as one share."},
            footer = {"", "Example:",
                "  vmfuse export add vm1 --uid 107 --image images/vm1.raw --journal journals/vm1 --weight 2 /srv/vmfuse",
                "  qemu-system-x86_64 -drive file=nbd+unix:///images/vm1.raw?socket=/run/vmfuse/nbd.sock,format=raw ...",
                "  vmfuse export add t2 --psk-identity tenant2 --image images/t2/vm.raw /srv/vmfuse   # over TCP, TLS-PSK"})
    static final class Add implements Callable<Integer> {
        @Option(names = "--uid", paramLabel = "UID",
                description = "On the unix socket: the user (a number) the clients run as, QEMU's (e.g. libvirt-qemu's).")
        Long uid;

        @Option(names = "--psk-identity", paramLabel = "IDENTITY",
                description = "Over TCP: the identity of the clients' pre-shared key (mount --tls-psk). An export is for "
                        + "a --uid, a --psk-identity, or both.")
        String pskIdentity;

        @Option(names = "--image", paramLabel = "images/PATH", description = "An image it holds (repeatable).")
        List<String> images = new ArrayList<>();

        @Option(names = "--journal", paramLabel = "journals/NAME", description = "A journal device it holds (repeatable).")
        List<String> journals = new ArrayList<>();

        @picocli.CommandLine.ArgGroup(exclusive = false)
        Controls controls = new Controls();

        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Parameters(index = "1", paramLabel = "MOUNTPOINT")
        Path mountPoint;

        @Override
        public Integer call() throws Exception {
            List<String> volumes = new ArrayList<>();
            for (String i : images) {
                volumes.add(i.startsWith("images/") ? i : "images/" + i);
            }
            for (String j : journals) {
                volumes.add(j.startsWith("journals/") ? j : "journals/" + j);
            }
            if (volumes.isEmpty()) {
                throw new FsException(Native.EINVAL, "an export holds at least one --image or --journal");
            }
            if ("-".equals(pskIdentity)) {
                throw new FsException(Native.EINVAL, "'-' is not a key identity");
            }
            if (uid == null && pskIdentity == null) {
                throw new FsException(Native.EINVAL, "an export is for a --uid (the unix socket), a --psk-identity "
                        + "(TCP with TLS), or both");
            }
            Controls c = controls == null ? new Controls() : controls;
            DaemonClient.request(mountPoint, new Request.ExportAdd(name, uid, pskIdentity, c.weight == null ? 1 : c.weight,
                    c.reservation == null ? 0 : c.reservation, c.limit == null ? 0 : c.limit, volumes));
            return 0;
        }
    }

    @Command(name = "set", mixinStandardHelpOptions = true,
            description = {"Change an export's controls while it runs: its next requests are scheduled by them.",
                "Prints the export as it now is."})
    static final class Set implements Callable<Integer> {
        @picocli.CommandLine.ArgGroup(exclusive = false, multiplicity = "1")
        Controls controls;

        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Parameters(index = "1", paramLabel = "MOUNTPOINT")
        Path mountPoint;

        @Override
        public Integer call() throws Exception {
            Answer.Export e = DaemonClient.one(DaemonClient.request(mountPoint,
                    new Request.ExportSet(name, controls.weight, controls.reservation, controls.limit)),
                    Answer.Export.class);
            System.out.printf("export %s: uid %s, psk identity %s, weight %d, reservation %d IOPS, limit %s%n", name,
                    e.uid() < 0 ? "none" : "" + e.uid(), e.pskIdentity() == null ? "none" : e.pskIdentity(), e.weight(),
                    e.reservationIops(), e.limitIops() == 0 ? "none" : e.limitIops() + " IOPS");
            return 0;
        }
    }

    @Command(name = "remove", mixinStandardHelpOptions = true,
            description = {"Forget an export: its user no longer sees its volumes, and its clients connected now are",
                "hung up on. The volumes themselves stay."})
    static final class Remove implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Parameters(index = "1", paramLabel = "MOUNTPOINT")
        Path mountPoint;

        @Override
        public Integer call() throws Exception {
            DaemonClient.request(mountPoint, new Request.ExportRemove(name));
            return 0;
        }
    }
}
