package vmfuse.fs.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

import com.fasterxml.jackson.databind.ObjectMapper;

import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import vmfuse.fs.FsException;
import vmfuse.fs.TsvField;
import vmfuse.fs.control.Answer;
import vmfuse.fs.control.Request;
import vmfuse.fs.nativeio.Native;

@Command(name = "status", mixinStandardHelpOptions = true,
        description = {"Show a mount's images: size, bytes allocated in the store, bytes released so far.",
            "Released bytes count every punch-hole, zero-range, shrinking truncate and unlink, as the",
            "drop of the backing file's allocated blocks; they persist across remounts."})
final class StatusCommand implements Callable<Integer> {

    @Parameters(index = "0", paramLabel = "MOUNTPOINT")
    Path mountPoint;

    @Option(names = {"-H", "--human"}, description = "Sizes as 1.5G rather than bytes.")
    boolean human;

    @Option(names = "--json", description = {"One JSON object for scripts, sizes in bytes: mount, store, images, total,",
        "vms, failedVms (README: Status)."})
    boolean json;

    @Spec
    CommandSpec spec;

    /** What --json prints: the status answer's lines, grouped. */
    record Json(Answer.Mount mount, Answer.StoreSpace store, List<Answer.Image> images, Answer.Total total,
            List<Answer.Vm> vms, List<Answer.VmFailed> failedVms, List<Answer.Export> exports,
            List<Answer.NbdShare> nbd) {
        static Json of(List<Answer> answer) throws FsException {
            List<Answer.Image> images = new ArrayList<>();
            List<Answer.Vm> vms = new ArrayList<>();
            List<Answer.VmFailed> failed = new ArrayList<>();
            List<Answer.Export> exports = new ArrayList<>();
            List<Answer.NbdShare> nbd = new ArrayList<>();
            for (Answer a : answer) {
                if (a instanceof Answer.Export e) {
                    exports.add(e);
                } else if (a instanceof Answer.NbdShare n) {
                    nbd.add(n);
                } else if (a instanceof Answer.Image i) {
                    images.add(i);
                } else if (a instanceof Answer.Vm v) {
                    vms.add(v);
                } else if (a instanceof Answer.VmFailed f) {
                    failed.add(f);
                }
            }
            return new Json(DaemonClient.one(answer, Answer.Mount.class), DaemonClient.one(answer, Answer.StoreSpace.class),
                    images, DaemonClient.one(answer, Answer.Total.class), vms, failed, exports, nbd);
        }
    }

    @Override
    public Integer call() throws Exception {
        List<Answer> answer = DaemonClient.request(mountPoint, new Request.Status());
        PrintWriter out = spec.commandLine().getOut();
        if (json) {
            out.println(new ObjectMapper().writerWithDefaultPrettyPrinter().writeValueAsString(Json.of(answer)));
        } else {
            print(answer, out);
        }
        return 0;
    }

    private void print(List<Answer> answer, PrintWriter out) throws FsException {
        List<String[]> rows = new ArrayList<>();
        rows.add(new String[] {"IMAGE", "SIZE", "ALLOCATED", "RELEASED", "RELEASES", "OPEN"});
        List<String[]> vms = new ArrayList<>();
        vms.add(new String[] {"VM", "IMAGE", "NOTICES", "REFUSED", "PENDING", "PUNCHED", "FREED", "SKIPPED PARTIAL",
            "SKIPPED WRITTEN", "SKIPPED NOT OWNED", "DROPPED", "THRESHOLD"});
        List<String> failed = new ArrayList<>();
        List<String[]> exports = new ArrayList<>();
        exports.add(new String[] {"EXPORT", "UID", "PSK IDENTITY", "WEIGHT", "RESERVATION", "LIMIT", "VOLUMES"});
        List<String[]> nbd = new ArrayList<>();
        nbd.add(new String[] {"NBD SHARE", "CLIENTS", "QUEUED", "READS", "WRITES", "FLUSHES", "TRIMS", "READ",
            "WRITTEN", "P50 US", "P99 US"});
        for (Answer a : answer) {
            if (a instanceof Answer.Export e) {
                exports.add(new String[] {TsvField.escape(e.name()), e.uid() < 0 ? "-" : "" + e.uid(),
                    e.pskIdentity() == null ? "-" : TsvField.escape(e.pskIdentity()), "" + e.weight(),
                    e.reservationIops() == 0 ? "-" : e.reservationIops() + " IOPS",
                    e.limitIops() == 0 ? "-" : e.limitIops() + " IOPS",
                    String.join(" ", e.volumes().stream().map(TsvField::escape).toList())});
            } else if (a instanceof Answer.NbdShare n) {
                nbd.add(new String[] {TsvField.escape(n.name()), "" + n.clients(), "" + n.queued(), "" + n.reads(),
                    "" + n.writes(), "" + n.flushes(), "" + n.trims(), bytes(n.bytesRead()), bytes(n.bytesWritten()),
                    "" + n.p50Micros(), "" + n.p99Micros()});
            } else if (a instanceof Answer.Mount m) {
                out.printf("mount %s  store %s  daemon pid %d%n", TsvField.escape(m.mountPoint()),
                        TsvField.escape(m.store()), m.pid());
            } else if (a instanceof Answer.StoreSpace s) {
                out.printf("backing store: %s free of %s%n", bytes(s.free()), bytes(s.total()));
            } else if (a instanceof Answer.Image i) {
                rows.add(new String[] {TsvField.escape(i.name()), bytes(i.size()), bytes(i.allocated()),
                    bytes(i.released()), "" + i.releases(), "" + i.open()});
            } else if (a instanceof Answer.Total t) {
                rows.add(new String[] {"total (" + t.images() + " images)", bytes(t.size()), bytes(t.allocated()),
                    bytes(t.released()), "" + t.releases(), ""});
            } else if (a instanceof Answer.Vm v) {
                vms.add(new String[] {TsvField.escape(v.name()), TsvField.escape(v.image()), "" + v.notices(),
                    "" + v.refused(), bytes(v.pending()), bytes(v.punched()), bytes(v.freed()), bytes(v.skippedPartial()),
                    bytes(v.skippedWrittenAfterFence() + v.skippedWrittenWhilePending()), bytes(v.skippedNotOwned()),
                    bytes(v.dropped()), String.format(Locale.ROOT, "%.4f", v.threshold())});
            } else if (a instanceof Answer.VmFailed f) {
                failed.add("vm " + TsvField.escape(f.name()) + " (" + TsvField.escape(f.image())
                        + ") is registered but not served: " + f.reason());
            } else {
                throw new FsException(Native.EIO, "the daemon answered: " + a.encode());
            }
        }
        TextTable.print(out, rows, true);
        if (vms.size() > 1) {
            out.println();
            TextTable.print(out, vms, true, true);
        }
        if (!failed.isEmpty()) {
            out.println();
            failed.forEach(out::println);
        }
        if (exports.size() > 1) {
            out.println();
            TextTable.print(out, exports, true);
        }
        if (nbd.size() > 1) {
            out.println();
            TextTable.print(out, nbd, true);
        }
    }

    private String bytes(long n) {
        if (!human) {
            return "" + n;
        }
        double v = n;
        String[] units = {"B", "K", "M", "G", "T", "P", "E"};
        int u = 0;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return u == 0 ? "" + n : String.format(Locale.ROOT, "%.1f%s", v, units[u]);
    }
}
