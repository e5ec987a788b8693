package vmfuse.fs.control;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Locale;

import org.junit.jupiter.api.Test;

import vmfuse.fs.FsException;
import vmfuse.fs.nativeio.Native;

/** The control protocol, both ends: every request and answer line goes through the wire and back unchanged. */
class ProtocolTest {
    @Test
    void everyRequestSurvivesTheWire() throws Exception {
        for (Request r : List.of(new Request.Status(), new Request.Journals(), new Request.JournalCheckpoint(),
                new Request.JournalReopen(),
                new Request.JournalCreate("j1", "64M", "close"),
                new Request.VmAdd("vm1", "vm1.raw", "/run/vm1.agent", null, null),
                new Request.VmAdd("vm2", "vm2.qcow2", "/run/vm2.agent", "/run/vm2.qmp", "libvirt-qemu:kvm"),
                new Request.VmRemove("vm1"), new Request.VmReclaim("vm 3 with spaces"),
                new Request.ExportAdd("t1", 107L, null, 2, 500, 5000, List.of("images/t1/vm1.raw", "journals/vm1")),
                new Request.ExportAdd("t2", null, "tenant2", 1, 0, 0, List.of("images/t2.raw")),
                new Request.ExportSet("t1", 3, null, 0L), new Request.ExportSet("t1", null, 10L, null),
                new Request.ExportRemove("t1"))) {
            assertEquals(r, Request.decode(r.encode()), r.encode());
        }
    }

    @Test
    void aRequestThatIsNotOneIsRefusedWithEinvalNamingWhy() {
        String[][] bad = {
            {"", "unknown request ''"},
            {"format\tdisk", "unknown request 'format'"},
            {"vm-remove", "vm-remove takes NAME"},
            {"vm-remove\ta\tb", "vm-remove takes NAME"},
            {"vm-reclaim\t", "vm-reclaim takes NAME: a field is empty"},
            {"journal-create\tj\t1M", "journal-create takes NAME SIZE DURABILITY"},
            {"journal-checkpoint\tnow", "journal-checkpoint takes nothing"},
            {"vm-add\ta\tb\tc", "vm-add takes NAME IMAGE AGENT-SOCKET QMP-SOCKET|- [USER[:GROUP]]"},
            {"status\textra", "status takes nothing"},
            {"export-add\tt1\t107\t-\t1\t0\t0", "export-add takes NAME UID|- PSK-IDENTITY|- WEIGHT"},
            {"export-add\tt1\tqemu\t-\t1\t0\t0\timages/a.raw", "'qemu' is not a number"},
            {"export-set\tt1\t-\t-1\t-", "'-1' is not a number"},
        };
        for (String[] b : bad) {
            FsException e = assertThrows(FsException.class, () -> Request.decode(b[0]), b[0]);
            assertEquals(Native.EINVAL, e.errno());
            assertTrue(e.getMessage().startsWith(b[1]), e.getMessage());
        }
    }

    @Test
    void aFieldThatWouldSplitTheLineIsRefusedBeforeItIsSent() {
        FsException e = assertThrows(FsException.class, () -> new Request.VmRemove("a\tb").encode());
        assertEquals(Native.EINVAL, e.errno());
        assertTrue(e.getMessage().contains("'a\\tb' holds a tab"), e.getMessage());
    }

    @Test
    void everyAnswerLineSurvivesTheWireWithNamesAsTheyAre() throws Exception {
        List<Answer> lines = List.of(
                new Answer.Mount("/mnt/with\ttab", 1234, "/var/store\\x"),
                new Answer.StoreSpace(1L << 40, 1L << 39),
                new Answer.Image("a\nb.raw", 1 << 30, 4096, 8192, 2, 1),
                new Answer.Total(1, 1 << 30, 4096, 8192, 2),
                new Answer.VmFailed("vm9", "vm9.raw", "no image vm9.raw in /store/images"),
                new Answer.Vm("vm1", "vm1.raw", "/run/vm1.agent", 3, 1, 4096, 65536, 65536, 512, 0, 0, 0.25, 0, 8192),
                new Answer.Journal("j\\1", 64 << 20, 4096, 4096, "flush", 1_700_000_000_000L),
                new Answer.JournalStore(1, 2, 3, 4, 5, 0, null),
                new Answer.JournalStore(1, 2, 3, 4, 5, 2, "journal store /s\tx: broken"),
                new Answer.JournalReopened(1),
                new Answer.Reclaimed(1, 2, 3, 4),
                new Answer.Export("t\t1", 107, null, 2, 500, 0, List.of("images/a\tb.raw", "journals/j1")),
                new Answer.Export("t2", -1, "tenant\t2", 1, 0, 0, List.of("images/t2.raw")),
                new Answer.NbdShare("images/x.raw", 1, 0, 200, 2, 5, 10, 20, 3, 4, 40960, 81920, 127, 2047),
                new Answer.Ok());
        String wire = Answer.encode(lines);
        assertEquals(lines.size(), wire.split("\n").length, "one line each: names escaped\n" + wire);
        assertEquals(lines, Answer.decode(wire));
    }

    @Test
    void theThresholdIsWrittenTheSameInEveryLocale() {
        Locale was = Locale.getDefault();
        try {
            Locale.setDefault(Locale.GERMANY);
            assertTrue(new Answer.Vm("v", "v.raw", "/s", 0, 0, 0, 0, 0, 0, 0, 0, 0.5, 0, 0).encode().contains("\t0.5000\t"));
        } finally {
            Locale.setDefault(was);
        }
    }

    @Test
    void anErrorCarriesItsErrnoToTheOtherEnd() {
        String wire = Answer.error(new FsException(Native.ENOENT, "no vm vm7")) + "\n";
        FsException e = assertThrows(FsException.class, () -> Answer.decode(wire));
        assertEquals(Native.ENOENT, e.errno());
        assertEquals("no vm vm7", e.getMessage());
        FsException busy = assertThrows(FsException.class,
                () -> Answer.decode(Answer.error(new FsException(Native.EBUSY, "image x.raw is vm a's\nsecond line"))));
        assertEquals(Native.EBUSY, busy.errno());
        assertEquals("image x.raw is vm a's second line", busy.getMessage());
    }

    @Test
    void aDaemonOfAnEarlierVersionIsStillUnderstood() throws Exception {
        FsException e = assertThrows(FsException.class, () -> Answer.decode("error vm-remove takes NAME\n"));
        assertEquals(Native.EINVAL, e.errno());
        assertEquals("vm-remove takes NAME", e.getMessage());
        assertEquals(List.of(new Answer.Reclaimed(1, 2, 3, 0)), Answer.decode("ok 1 2 3\n"));
        assertEquals(List.of(new Answer.Ok()), Answer.decode("ok\n"));
    }

    @Test
    void aLineNotUnderstoodIsAnErrorThatShowsIt() {
        for (String bad : List.of("image\tonly-a-name\n", "mystery\t1\n", "store\tx\t1\n")) {
            FsException e = assertThrows(FsException.class, () -> Answer.decode(bad), bad);
            assertEquals(Native.EIO, e.errno());
            assertTrue(e.getMessage().endsWith(bad.trim()), e.getMessage());
        }
    }
}
