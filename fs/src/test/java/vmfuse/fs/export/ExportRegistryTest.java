package vmfuse.fs.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import vmfuse.durable.FaultyDisk;
import vmfuse.durable.RealDisk;
import vmfuse.fs.TsvField;
import vmfuse.nbd.Scheduler;

/** exports.tsv read at mount through the store's disk layer: a read error that passes costs nothing. */
class ExportRegistryTest {
    @TempDir
    Path dir;

    private Path file() {
        return dir.resolve("exports.tsv");
    }

    private void oneExport() throws Exception {
        try (Scheduler s = new Scheduler(1)) {
            ExportRegistry r = ExportRegistry.load(RealDisk.of(null), file(), s);
            r.add(new ExportRegistry.Grant("vm1", 107, null, new Scheduler.Qos(2, 0, 0), List.of("images/vm1.raw")));
        }
    }

    @Test
    void aReadThatFailsOnceAtMountIsTriedAgain() throws Exception {
        oneExport();
        FaultyDisk disk = new FaultyDisk(RealDisk.of(null), dir.resolve("graveyard"), 1);
        disk.failRead(disk.reads() + 1);
        try (Scheduler s = new Scheduler(1)) {
            ExportRegistry r = ExportRegistry.load(disk, file(), s);
            assertEquals(1, disk.failures(), "the first read failed");
            assertEquals(2, r.get("vm1").qos().weight());
        }
    }

    @Test
    void aReadThatKeepsFailingFailsTheLoadWithTheError() throws Exception {
        oneExport();
        FaultyDisk disk = new FaultyDisk(RealDisk.of(null), dir.resolve("graveyard"), 2);
        disk.failReads(file(), 0, 1);
        try (Scheduler s = new Scheduler(1)) {
            IOException e = assertThrows(IOException.class, () -> ExportRegistry.load(disk, file(), s));
            assertEquals("Input/output error", e.getMessage());
            assertEquals(TsvField.READ_TRIES, disk.failures());
        }
    }
}
