package vmfuse.fs.space;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ReleaseLedgerTest {
    @TempDir
    Path dir;

    @Test
    void countsPerImageAndInTotalAndSurviveAReload() throws Exception {
        Path file = dir.resolve("releases.tsv");
        ReleaseLedger l = ReleaseLedger.load(file);
        l.record("a.raw", 0, 4096, 4096, ReleaseLedger.Reason.PUNCH_HOLE);
        l.record("a.raw", 8192, 8192, 8192, ReleaseLedger.Reason.ZERO_RANGE);
        l.record("b.qcow2", 0, 100, 0, ReleaseLedger.Reason.TRUNCATE);
        l.renamed("b.qcow2", "c.qcow2");
        l.record("d.raw", 0, 65536, 65536, ReleaseLedger.Reason.UNLINK);
        l.forget("d.raw");
        l.save(true);

        ReleaseLedger again = ReleaseLedger.load(file);
        assertEquals(new ReleaseLedger.Count(12288, 2), again.of("a.raw"));
        assertEquals(new ReleaseLedger.Count(0, 1), again.of("c.qcow2"));
        assertEquals(new ReleaseLedger.Count(0, 0), again.of("b.qcow2"));
        assertEquals(new ReleaseLedger.Count(0, 0), again.of("d.raw"));
        assertEquals(new ReleaseLedger.Count(77824, 4), again.total());
        assertTrue(Files.exists(file));
        assertTrue(!Files.exists(dir.resolve("releases.tsv.tmp")));
    }

    /** What metrics read: since start, by reason, following renames; a gone image's only in the total. */
    @Test
    void countsByReasonSinceStartFollowRenamesAndForgetTheGone() throws Exception {
        ReleaseLedger l = ReleaseLedger.load(dir.resolve("releases.tsv"));
        l.record("images/t/a.raw", 0, 4096, 4096, ReleaseLedger.Reason.PUNCH_HOLE);
        l.record("images/t/a.raw", 0, 4096, 4096, ReleaseLedger.Reason.PUNCH_HOLE);
        l.record("images/t/a.raw", 0, 8192, 8192, ReleaseLedger.Reason.RECLAIM);
        l.record("images/u.raw", 0, 65536, 65536, ReleaseLedger.Reason.UNLINK);
        l.forget("images/u.raw");
        l.renamed("images/t", "images/v");
        var byName = l.sinceStartByName();
        assertEquals(java.util.Set.of("images/v/a.raw"), byName.keySet());
        ReleaseLedger.Count[] a = byName.get("images/v/a.raw");
        assertEquals(new ReleaseLedger.Count(8192, 2), a[ReleaseLedger.Reason.PUNCH_HOLE.ordinal()]);
        assertEquals(new ReleaseLedger.Count(8192, 1), a[ReleaseLedger.Reason.RECLAIM.ordinal()]);
        assertEquals(new ReleaseLedger.Count(0, 0), a[ReleaseLedger.Reason.UNLINK.ordinal()]);
        ReleaseLedger.Count[] total = l.totalSinceStart();
        assertEquals(new ReleaseLedger.Count(65536, 1), total[ReleaseLedger.Reason.UNLINK.ordinal()]);
        assertEquals(new ReleaseLedger.Count(8192, 2), total[ReleaseLedger.Reason.PUNCH_HOLE.ordinal()]);
        l.save(true);
        ReleaseLedger again = ReleaseLedger.load(dir.resolve("releases.tsv"));
        assertTrue(again.sinceStartByName().isEmpty(), "not saved: a new process starts from zero");
        assertEquals(new ReleaseLedger.Count(16384, 3), again.of("images/v/a.raw"), "the saved counts are whole");
    }

    @Test
    void namesWithTabsNewlinesAndBackslashesSurviveAReload() throws Exception {
        Path file = dir.resolve("releases.tsv");
        ReleaseLedger l = ReleaseLedger.load(file);
        String[] names = {"a\tb.raw", "c\nd.raw", "e\\t.raw", "journals/f\r\ng"};
        for (int i = 0; i < names.length; i++) {
            l.record(names[i], 0, 4096, 4096L * (i + 1), ReleaseLedger.Reason.PUNCH_HOLE);
        }
        l.save(true);
        assertEquals(names.length + 2, Files.readAllLines(file).size(), "the format, one line per name, the total");

        ReleaseLedger again = ReleaseLedger.load(file);
        for (int i = 0; i < names.length; i++) {
            assertEquals(new ReleaseLedger.Count(4096L * (i + 1), 1), again.of(names[i]), names[i]);
        }
        assertEquals(new ReleaseLedger.Count(40960, 4), again.total());
    }

    /**
     * A ledger a crash left unreadable (its periodic saves are not forced) costs the counts, never
     * the mount: it is set aside whole, and counting starts again.
     */
    @Test
    void anUnreadableLedgerIsSetAsideWholeAndCountingStartsAgain() throws Exception {
        Path file = dir.resolve("releases.tsv");
        Files.writeString(file, "a.raw\tnot-a-number\t1\n");
        ReleaseLedger l = ReleaseLedger.load(file);
        assertEquals(new ReleaseLedger.Count(0, 0), l.total());
        assertEquals("a.raw\tnot-a-number\t1\n", Files.readString(dir.resolve("releases.tsv.unreadable")));
        assertFalse(Files.exists(file));
        l.record("b.raw", 0, 4096, 4096, ReleaseLedger.Reason.PUNCH_HOLE);
        l.save(true);
        assertEquals(new ReleaseLedger.Count(4096, 1), ReleaseLedger.load(file).total());
    }

    /** A read of the ledger that fails once (a transient EIO) is tried again: the counts are kept, nothing is set aside. */
    @Test
    void aReadThatFailsOnceKeepsTheCounts() throws Exception {
        Path file = dir.resolve("releases.tsv");
        ReleaseLedger l = ReleaseLedger.load(file);
        l.record("a.raw", 0, 8192, 8192, ReleaseLedger.Reason.PUNCH_HOLE);
        l.save(true);
        vmfuse.durable.FaultyDisk disk = new vmfuse.durable.FaultyDisk(vmfuse.durable.RealDisk.of(null),
                dir.resolve("graveyard"), 1);
        disk.failRead(disk.reads() + 1);
        ReleaseLedger again = ReleaseLedger.load(disk, file);
        assertEquals(1, disk.failures(), "the first read failed");
        assertEquals(new ReleaseLedger.Count(8192, 1), again.total());
        assertFalse(Files.exists(dir.resolve("releases.tsv.unreadable")));
    }

    /**
     * Format 1 counted images by their bare name (no image was in a folder then) and devices as
     * journals/NAME; read now, images are under images/ and an image in a folder named journals
     * is not taken for a device.
     */
    @Test
    void aFormat1LedgerIsReadWithImagesUnderImagesAndDevicesApart() throws Exception {
        Path file = dir.resolve("releases.tsv");
        Files.writeString(file, "vm1.raw\t4096\t1\njournals/j1\t8192\t2\n*total*\t12288\t3\n");
        ReleaseLedger l = ReleaseLedger.load(file);
        assertEquals(new ReleaseLedger.Count(4096, 1), l.of(ReleaseLedger.image("vm1.raw")));
        assertEquals(new ReleaseLedger.Count(8192, 2), l.of(ReleaseLedger.device("j1")));
        l.record(ReleaseLedger.image("journals/j1"), 0, 4096, 4096, ReleaseLedger.Reason.PUNCH_HOLE);
        l.save(true);

        ReleaseLedger again = ReleaseLedger.load(file);
        assertEquals(new ReleaseLedger.Count(8192, 2), again.of(ReleaseLedger.device("j1")));
        assertEquals(new ReleaseLedger.Count(4096, 1), again.of(ReleaseLedger.image("journals/j1")));
        assertEquals(new ReleaseLedger.Count(16384, 4), again.total());
        assertEquals("*format*\t2\t0", Files.readAllLines(file).get(0));
    }

    @Test
    void aFolderRenameCarriesTheCountsOfEveryImageInItAndNoOther() throws Exception {
        ReleaseLedger l = ReleaseLedger.load(dir.resolve("releases.tsv"));
        l.record(ReleaseLedger.image("t1/a.raw"), 0, 4096, 4096, ReleaseLedger.Reason.PUNCH_HOLE);
        l.record(ReleaseLedger.image("t1/vm/b.raw"), 0, 4096, 8192, ReleaseLedger.Reason.PUNCH_HOLE);
        l.record(ReleaseLedger.image("t10/c.raw"), 0, 4096, 4096, ReleaseLedger.Reason.PUNCH_HOLE);
        l.renamed(ReleaseLedger.image("t1"), ReleaseLedger.image("archive/t1"));
        assertEquals(new ReleaseLedger.Count(4096, 1), l.of(ReleaseLedger.image("archive/t1/a.raw")));
        assertEquals(new ReleaseLedger.Count(8192, 1), l.of(ReleaseLedger.image("archive/t1/vm/b.raw")));
        assertEquals(new ReleaseLedger.Count(4096, 1), l.of(ReleaseLedger.image("t10/c.raw")), "a sibling stays");
        assertEquals(new ReleaseLedger.Count(0, 0), l.of(ReleaseLedger.image("t1/a.raw")));
    }
    /**
     * A guest's discards come at will: the ledger counts every one, and logs LOGGED_PER_SECOND a
     * second at most (the log shares the store's disk; a review found one guest able to fill it).
     */
    @Test
    void releasesAreAllCountedAndAtMostARateOfThemLogged() throws Exception {
        ReleaseLedger l = ReleaseLedger.load(dir.resolve("releases.tsv"));
        ch.qos.logback.classic.Logger logger =
                (ch.qos.logback.classic.Logger) org.slf4j.LoggerFactory.getLogger(ReleaseLedger.class);
        ch.qos.logback.core.read.ListAppender<ch.qos.logback.classic.spi.ILoggingEvent> lines =
                new ch.qos.logback.core.read.ListAppender<>();
        lines.start();
        logger.addAppender(lines);
        try {
            long t0 = System.nanoTime();
            for (int i = 0; i < 10_000; i++) {
                l.record("a.raw", (long) i * 4096, 4096, 4096, ReleaseLedger.Reason.PUNCH_HOLE);
            }
            long seconds = (System.nanoTime() - t0) / 1_000_000_000L + 1;
            assertEquals(new ReleaseLedger.Count(10_000L * 4096, 10_000), l.of("a.raw"));
            assertTrue(lines.list.size() <= (seconds + 1) * (ReleaseLedger.LOGGED_PER_SECOND + 1),
                    lines.list.size() + " lines in " + seconds + " s");
        } finally {
            logger.detachAppender(lines);
        }
    }
}
