package vmfuse.durable;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Disk.replace, the one way the daemon rewrites a record file (vms.tsv, releases.tsv, a compacted
 * notice log): whatever call of it fails and wherever the power goes, the file reads as its old
 * contents or its new, whole; once it returned, the new survive a power cut.
 */
class DiskReplaceTest {
    @TempDir
    Path dir;

    private static final byte[] OLD = "vm1\tvm1.raw\t/run/a.sock\t-\n".repeat(300).getBytes(StandardCharsets.UTF_8);
    private static final byte[] NEW = "vm2\tvm2.raw\t/run/b.sock\t-\n".repeat(200).getBytes(StandardCharsets.UTF_8);

    @Test
    void aReplacedFileIsOldOrNewWholeWhateverFailsAndWhereverThePowerGoes() throws Exception {
        int runs = 0;
        for (long point = 1; ; point++) {
            boolean reached = false;
            for (int cut = 0; cut < 2; cut++) {
                Path root = Files.createTempDirectory(dir, "run");
                Path file = Files.createDirectories(root.resolve("store")).resolve("vms.tsv");
                FaultyDisk disk = new FaultyDisk(RealDisk.of(null), root.resolve("graveyard"), point * 2 + cut);
                disk.replace(file, OLD);
                long base = disk.calls();
                if (cut == 1) {
                    disk.powerCutAt(base + point);
                } else {
                    disk.failAt(base + point, FaultyDisk.Fault.values()[(int) (point % 3)]);
                }
                boolean returned = false;
                try {
                    disk.replace(file, NEW);
                    returned = true;
                } catch (IOException e) {
                    reached = true;
                }
                reached |= disk.calls() >= base + point;
                disk.powerCut();
                disk.afterCut();
                assertTrue(Files.exists(file), "call " + point + (cut == 1 ? " lost power" : " failed") + ": the file is gone");
                byte[] back = Files.readAllBytes(file);
                boolean whole = java.util.Arrays.equals(back, OLD) || java.util.Arrays.equals(back, NEW);
                assertTrue(whole, "call " + point + (cut == 1 ? " lost power" : " failed") + ": " + back.length
                        + " bytes, neither the old contents nor the new");
                if (returned) {
                    assertTrue(java.util.Arrays.equals(back, NEW), "replace returned, then the power went: the old came back");
                }
                runs++;
            }
            if (!reached) {
                assertTrue(runs > 8, "a replace makes a handful of disk calls");
                return;
            }
        }
    }
}
