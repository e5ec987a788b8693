package vmfuse.fs.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import vmfuse.fs.FsException;
import vmfuse.fs.TsvField;
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

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        String answer = DaemonClient.request(mountPoint, "status");
        print(answer, spec.commandLine().getOut());
        return 0;
    }

    private void print(String answer, PrintWriter out) throws FsException {
        List<String[]> rows = new ArrayList<>();
        rows.add(new String[] {"IMAGE", "SIZE", "ALLOCATED", "RELEASED", "RELEASES", "OPEN"});
        List<String[]> vms = new ArrayList<>();
        vms.add(new String[] {"VM", "IMAGE", "NOTICES", "REFUSED", "PENDING", "PUNCHED", "FREED", "SKIPPED PARTIAL",
            "SKIPPED WRITTEN", "SKIPPED NOT OWNED", "DROPPED", "THRESHOLD"});
        List<String> failed = new ArrayList<>();
        for (String line : answer.split("\n")) {
            String[] f = line.split("\t");
            switch (f[0]) {
                case "mount" -> out.printf("mount %s  store %s  daemon pid %s%n", f[1], f[3], f[2]);
                case "store" -> out.printf("backing store: %s free of %s%n", bytes(f[2]), bytes(f[1]));
                case "image" -> rows.add(new String[] {f[1], bytes(f[2]), bytes(f[3]), bytes(f[4]), f[5], f[6]});
                case "total" -> rows.add(new String[] {"total (" + f[1] + " images)", bytes(f[2]), bytes(f[3]),
                    bytes(f[4]), f[5], ""});
                case "vm" -> vms.add(new String[] {f[1], f[2], f[4], f[5], bytes(f[6]), bytes(f[7]), bytes(f[8]),
                    bytes(f[9]), bytes(String.valueOf(Long.parseLong(f[10]) + Long.parseLong(f[11]))), bytes(f[13]),
                    bytes(f[14]), f[12]});
                case "vm-failed" -> failed.add("vm " + TsvField.unescape(f[1]) + " (" + TsvField.unescape(f[2])
                        + ") is registered but not served: " + TsvField.unescape(f[3]));
                default -> throw new FsException(Native.EIO, "daemon answered: " + line);
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
    }

    private String bytes(String s) {
        if (!human) {
            return s;
        }
        double v = Long.parseLong(s);
        String[] units = {"B", "K", "M", "G", "T", "P", "E"};
        int u = 0;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return u == 0 ? s : String.format("%.1f%s", v, units[u]);
    }
}
