package vmfuse.durable;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;

class FaultyDiskTest {
    private static final int PAGE = FaultyDisk.PAGE;
    private static final int SECTOR = FaultyDisk.SECTOR;
    private static final int SEEDS = 200;

    @TempDir
    Path root;

    /** A disk over a fresh directory {@code root/name}, its graveyard beside it. */
    private FaultyDisk disk(String name, long seed) throws IOException {
        Files.createDirectories(root.resolve(name));
        return new FaultyDisk(RealDisk.of(null), root.resolve(name + ".graveyard"), seed);
    }

    private Path dir(String name) {
        return root.resolve(name);
    }

    private static byte[] filled(int pages, int value) {
        byte[] b = new byte[pages * PAGE];
        Arrays.fill(b, (byte) value);
        return b;
    }

    private static void write(DiskFile f, long pos, byte[] b) throws IOException {
        f.writeFully(ByteBuffer.wrap(b), pos);
    }

    /** A file holding {@code content}, forced, its directory synced: all of it durable. */
    private static void durableFile(FaultyDisk disk, Path file, byte[] content) throws IOException {
        try (DiskFile f = disk.open(file, true)) {
            write(f, 0, content);
            f.force(true);
        }
        disk.syncDirectory(file.getParent());
    }

    private static boolean sectorIs(byte[] b, int from, int value) {
        for (int i = from; i < from + SECTOR; i++) {
            if (b[i] != (byte) value) {
                return false;
            }
        }
        return true;
    }

    /** Four durable pages of 1s, overwritten with 2s and extended by two pages of 3s, none of it forced; then the cut. */
    private byte[] unforcedOverwriteThenCut(long seed) throws IOException {
        String name = "d" + seed;
        FaultyDisk disk = disk(name, seed);
        Path file = dir(name).resolve("f");
        durableFile(disk, file, filled(4, 1));
        try (DiskFile f = disk.open(file, false)) {
            write(f, 0, filled(4, 2));
            write(f, 4 * PAGE, filled(2, 3));
        }
        disk.powerCut();
        return Files.readAllBytes(file);
    }

    @Test
    void aWriteForcedBeforeTheCutSurvivesIt() throws Exception {
        for (long seed = 0; seed < SEEDS; seed++) {
            String name = "d" + seed;
            FaultyDisk disk = disk(name, seed);
            Path file = dir(name).resolve("f");
            durableFile(disk, file, filled(1, 1));
            DiskFile f = disk.open(file, false);
            write(f, PAGE, filled(2, 2));
            f.force(false); // fdatasync makes the new size durable too
            write(f, 3 * PAGE, filled(1, 3)); // not forced: may go
            disk.powerCut();
            byte[] after = Files.readAllBytes(file);
            assertTrue(after.length == 3 * PAGE || after.length == 4 * PAGE, "seed " + seed);
            byte[] forced = new byte[3 * PAGE];
            System.arraycopy(filled(1, 1), 0, forced, 0, PAGE);
            System.arraycopy(filled(2, 2), 0, forced, PAGE, 2 * PAGE);
            assertArrayEquals(forced, Arrays.copyOf(after, 3 * PAGE), "seed " + seed);
        }
    }

    @Test
    void anUnforcedWriteCanBeLostOrTornButNeverInventsBytes() throws Exception {
        boolean sawOld = false;
        boolean sawNew = false;
        boolean sawTorn = false;
        for (long seed = 0; seed < SEEDS; seed++) {
            byte[] after = unforcedOverwriteThenCut(seed);
            assertTrue(after.length == 4 * PAGE || after.length == 6 * PAGE, "size durable or current, seed " + seed);
            for (int p = 0; p < after.length / PAGE; p++) {
                int old = p < 4 ? 1 : 0; // the extension's old content: zeros
                int now = p < 4 ? 2 : 3;
                int olds = 0;
                for (int s = p * PAGE; s < (p + 1) * PAGE; s += SECTOR) {
                    boolean isOld = sectorIs(after, s, old);
                    assertTrue(isOld || sectorIs(after, s, now), "each sector old or new, seed " + seed + " page " + p);
                    olds += isOld ? 1 : 0;
                }
                sawOld |= olds == PAGE / SECTOR;
                sawNew |= olds == 0;
                sawTorn |= olds > 0 && olds < PAGE / SECTOR;
            }
        }
        assertTrue(sawOld && sawNew && sawTorn, "pages lost, kept and torn: " + sawOld + sawNew + sawTorn);
    }

    @Test
    void noneAndAllModesBothOccurOverSeeds() throws Exception {
        byte[] none = filled(4, 1);
        byte[] all = new byte[6 * PAGE];
        System.arraycopy(filled(4, 2), 0, all, 0, 4 * PAGE);
        System.arraycopy(filled(2, 3), 0, all, 4 * PAGE, 2 * PAGE);
        int nones = 0;
        int alls = 0;
        for (long seed = 0; seed < SEEDS; seed++) {
            byte[] after = unforcedOverwriteThenCut(seed);
            nones += Arrays.equals(after, none) ? 1 : 0;
            alls += Arrays.equals(after, all) ? 1 : 0;
        }
        // a quarter each, and RANDOM rarely lands on either exactly with six pages
        assertTrue(nones > SEEDS / 8 && nones < SEEDS / 2, "nothing survives in " + nones + " of " + SEEDS);
        assertTrue(alls > SEEDS / 8 && alls < SEEDS / 2, "everything survives in " + alls + " of " + SEEDS);
    }

    @Test
    void aCreateSurvivesOnlyIfItsDirectoryWasSynced() throws Exception {
        int lost = 0;
        for (long seed = 0; seed < SEEDS / 4; seed++) {
            String name = "d" + seed;
            FaultyDisk disk = disk(name, seed);
            Path synced = dir(name).resolve("synced");
            Path unsynced = dir(name).resolve("unsynced");
            durableFile(disk, synced, filled(1, 1));
            try (DiskFile f = disk.open(unsynced, true)) {
                write(f, 0, filled(1, 2));
                f.force(true); // its data is durable, its name is not
            }
            disk.powerCut();
            assertArrayEquals(filled(1, 1), Files.readAllBytes(synced), "seed " + seed);
            if (Files.exists(unsynced)) {
                assertArrayEquals(filled(1, 2), Files.readAllBytes(unsynced), "seed " + seed);
            } else {
                lost++;
            }
        }
        assertTrue(lost > 0, "an unsynced create never vanished");
    }

    @Test
    void aRenameOverAFileIsUndoneWithTheOldTargetBack() throws Exception {
        int undone = 0;
        int kept = 0;
        for (long seed = 0; seed < SEEDS / 4; seed++) {
            String name = "d" + seed;
            FaultyDisk disk = disk(name, seed);
            Path target = dir(name).resolve("target");
            Path tmp = dir(name).resolve("tmp");
            durableFile(disk, target, filled(1, 1));
            durableFile(disk, tmp, filled(2, 2));
            disk.rename(tmp, target); // not synced
            assertFalse(Files.exists(tmp));
            disk.powerCut();
            if (Files.exists(tmp)) {
                undone++;
                assertArrayEquals(filled(1, 1), Files.readAllBytes(target), "the old target back, seed " + seed);
                assertArrayEquals(filled(2, 2), Files.readAllBytes(tmp), "seed " + seed);
            } else {
                kept++;
                assertArrayEquals(filled(2, 2), Files.readAllBytes(target), "seed " + seed);
            }
            try (Stream<Path> graves = Files.list(root.resolve(name + ".graveyard"))) {
                assertEquals(0, graves.count(), "the graveyard is empty after a cut, seed " + seed);
            }
        }
        assertTrue(undone > 0 && kept > 0, "undone " + undone + ", kept " + kept);
    }

    @Test
    void aDeleteIsUndoneUntilItsDirectoryIsSynced() throws Exception {
        int back = 0;
        for (long seed = 0; seed < SEEDS / 4; seed++) {
            String name = "d" + seed;
            FaultyDisk disk = disk(name, seed);
            Path gone = dir(name).resolve("gone");
            Path maybe = dir(name).resolve("maybe");
            durableFile(disk, gone, filled(1, 1));
            durableFile(disk, maybe, filled(1, 2));
            disk.delete(gone);
            disk.syncDirectory(dir(name));
            DiskFile open = disk.open(maybe, false);
            disk.delete(maybe);
            write(open, 0, filled(1, 3)); // through the still-open file, into the deleted one
            disk.powerCut();
            assertFalse(Files.exists(gone), "a synced delete stays, seed " + seed);
            if (Files.exists(maybe)) {
                back++;
                byte[] b = Files.readAllBytes(maybe);
                assertEquals(PAGE, b.length);
                for (int s = 0; s < PAGE; s += SECTOR) {
                    assertTrue(sectorIs(b, s, 2) || sectorIs(b, s, 3), "seed " + seed);
                }
            }
        }
        assertTrue(back > 0, "an unsynced delete was never undone");
    }

    @Test
    void aForceThatFailedLeavesItsPagesLosableEvenAfterALaterForceSucceeds() throws Exception {
        int lost = 0;
        for (long seed = 0; seed < SEEDS; seed++) {
            String name = "d" + seed;
            FaultyDisk disk = disk(name, seed);
            Path file = dir(name).resolve("f");
            durableFile(disk, file, filled(2, 1));
            DiskFile f = disk.open(file, false);
            write(f, 0, filled(1, 2)); // page 0: its force fails
            disk.failAt(disk.calls() + 1, FaultyDisk.Fault.EIO);
            assertThrows(IOException.class, () -> f.force(false));
            write(f, PAGE, filled(1, 3)); // page 1: written after the failure
            f.force(false); // returns 0, as Linux's fsync does after the error was reported
            disk.powerCut();
            byte[] after = Files.readAllBytes(file);
            assertArrayEquals(filled(1, 3), Arrays.copyOfRange(after, PAGE, 2 * PAGE), "forced after, seed " + seed);
            lost += Arrays.equals(filled(1, 1), Arrays.copyOf(after, PAGE)) ? 1 : 0;
        }
        assertTrue(lost > 0, "the page whose force failed always survived");
    }

    @Test
    void aPageWrittenAgainAfterAFailedForceIsDurableAtTheNextForce() throws Exception {
        for (long seed = 0; seed < SEEDS / 4; seed++) {
            String name = "d" + seed;
            FaultyDisk disk = disk(name, seed);
            Path file = dir(name).resolve("f");
            durableFile(disk, file, filled(1, 1));
            DiskFile f = disk.open(file, false);
            write(f, 0, filled(1, 2));
            disk.failAt(disk.calls() + 1, FaultyDisk.Fault.EIO);
            assertThrows(IOException.class, () -> f.force(true));
            write(f, 0, filled(1, 2)); // what PostgreSQL does now: write it again from its own buffers
            f.force(true);
            disk.powerCut();
            assertArrayEquals(filled(1, 2), Files.readAllBytes(file), "seed " + seed);
        }
    }

    @Test
    void twoOpensOfOneFileShareWhatIsUnsynced() throws Exception {
        for (long seed = 0; seed < SEEDS / 4; seed++) {
            String name = "d" + seed;
            FaultyDisk disk = disk(name, seed);
            Path file = dir(name).resolve("f");
            durableFile(disk, file, filled(1, 1));
            DiskFile writer = disk.open(file, false);
            DiskFile forcer = disk.open(file, false);
            write(writer, 0, filled(2, 2));
            forcer.force(false); // fsync of any descriptor syncs the file
            disk.powerCut();
            assertArrayEquals(filled(2, 2), Files.readAllBytes(file), "seed " + seed);
        }
    }

    @Test
    void aTruncateThenReextendRevertsToTheDurableContent() throws Exception {
        boolean sawDurable = false;
        for (long seed = 0; seed < SEEDS / 2; seed++) {
            String name = "d" + seed;
            FaultyDisk disk = disk(name, seed);
            Path file = dir(name).resolve("f");
            durableFile(disk, file, filled(4, 1));
            DiskFile f = disk.open(file, false);
            f.truncate(PAGE + 100);
            write(f, 2 * PAGE, filled(1, 2));
            disk.powerCut();
            byte[] after = Files.readAllBytes(file);
            assertTrue(after.length == 3 * PAGE || after.length == 4 * PAGE, "seed " + seed);
            assertArrayEquals(filled(1, 1), Arrays.copyOf(after, PAGE), "untouched page, seed " + seed);
            for (int s = PAGE; s < after.length; s += SECTOR) {
                assertTrue(sectorIs(after, s, 1) || sectorIs(after, s, 2) || sectorIs(after, s, 0)
                        || (s == PAGE && after[s] == 1 && after[s + 100] == 0), "seed " + seed + " at " + s);
            }
            sawDurable |= Arrays.equals(filled(4, 1), after);
        }
        assertTrue(sawDurable, "the truncate was never undone");
    }

    @Test
    void theNthCallFailsOnceWithTheFaultAsked() throws Exception {
        FaultyDisk disk = disk("d", 1);
        Path file = dir("d").resolve("f");
        disk.failAt(3, FaultyDisk.Fault.EIO);
        disk.failAt(5, FaultyDisk.Fault.ENOSPC);
        DiskFile f = disk.open(file, true); // 1: a create
        write(f, 0, filled(1, 1)); // 2
        f.read(ByteBuffer.allocate(10), 0); // reads, sizes, opens of an existing file are not counted
        f.size();
        disk.exists(file);
        disk.readAll(file);
        disk.usableSpace(file);
        disk.open(file, true).close();
        disk.delete(dir("d").resolve("absent"));
        assertEquals(2, disk.calls());
        IOException eio = assertThrows(IOException.class, () -> f.force(true)); // 3
        assertEquals("Input/output error", eio.getMessage());
        f.force(true); // 4: works again
        IOException full = assertThrows(IOException.class, () -> disk.syncDirectory(dir("d"))); // 5
        assertEquals("No space left on device", full.getMessage());
        disk.syncDirectory(dir("d")); // 6
        assertEquals(6, disk.calls());
        assertEquals(2, disk.failures());
    }

    @Test
    void failFromKeepsFailing() throws Exception {
        FaultyDisk disk = disk("d", 1);
        Path file = dir("d").resolve("f");
        DiskFile f = disk.open(file, true);
        disk.failFrom(2, FaultyDisk.Fault.ENOSPC);
        for (int i = 0; i < 5; i++) {
            IOException e = assertThrows(IOException.class, () -> write(f, 0, filled(1, 1)));
            assertTrue(e.getMessage().startsWith("No space left"));
        }
        assertThrows(IOException.class, () -> disk.rename(file, dir("d").resolve("g")));
        assertEquals(6, disk.failures());
        assertEquals(0, Files.size(file), "no failed write wrote anything");
        assertTrue(Files.exists(file));
    }

    @Test
    void aShortWriteIsFollowedByEnospc() throws Exception {
        boolean sawUnaligned = false;
        for (long seed = 0; seed < 40; seed++) {
            String name = "d" + seed;
            FaultyDisk disk = disk(name, seed);
            Path file = dir(name).resolve("f");
            DiskFile f = disk.open(file, true);
            disk.failAt(disk.calls() + 1, FaultyDisk.Fault.SHORT_WRITE);
            byte[] data = filled(4, 7);
            ByteBuffer src = ByteBuffer.wrap(data);
            int n = f.write(src, 0);
            assertTrue(n >= 1 && n < data.length, "short: " + n);
            assertEquals(n, src.position());
            assertEquals(n, Files.size(file), "the prefix reached the file");
            sawUnaligned |= n % PAGE != 0;
            IOException e = assertThrows(IOException.class, () -> f.write(src, n));
            assertEquals("No space left on device", e.getMessage());
            f.writeFully(src, n); // the fault is over
            assertArrayEquals(data, Files.readAllBytes(file));
            assertEquals(1, disk.failures());
        }
        assertTrue(sawUnaligned, "no short write stopped inside a page");
    }

    @Test
    void afterACutEveryCallFails() throws Exception {
        FaultyDisk disk = disk("d", 3);
        Path file = dir("d").resolve("f");
        durableFile(disk, file, filled(1, 1));
        DiskFile f = disk.open(file, false);
        disk.powerCut();
        assertTrue(disk.isCut());
        for (Executable call : new Executable[] {
            () -> f.read(ByteBuffer.allocate(1), 0), () -> write(f, 0, filled(1, 2)), () -> f.force(true),
            () -> f.truncate(0), f::size, () -> f.punch(0, PAGE), () -> disk.open(file, false),
            () -> disk.readAll(file), () -> disk.rename(file, dir("d").resolve("g")), () -> disk.delete(file),
            () -> disk.syncDirectory(dir("d")), () -> disk.usableSpace(file),
        }) {
            IOException e = assertThrows(IOException.class, call);
            assertEquals("power cut", e.getMessage());
        }
        UncheckedIOException e = assertThrows(UncheckedIOException.class, () -> disk.exists(file));
        assertEquals("power cut", e.getCause().getMessage());

        FaultyDisk next = disk.afterCut();
        assertFalse(next.isCut());
        assertEquals(0, next.calls());
        assertArrayEquals(filled(1, 1), next.readAll(file), "the next mount reads what survived");
    }

    @Test
    void powerCutAtStopsTheNthCall() throws Exception {
        for (long seed = 0; seed < 20; seed++) {
            String name = "d" + seed;
            FaultyDisk disk = disk(name, seed);
            Path file = dir(name).resolve("f");
            durableFile(disk, file, filled(1, 1)); // calls 1-4
            disk.powerCutAt(disk.calls() + 2);
            disk.rename(file, dir(name).resolve("g")); // not synced: may go either way
            IOException e = assertThrows(IOException.class, () -> disk.syncDirectory(dir(name)));
            assertEquals("power cut", e.getMessage());
            assertTrue(disk.isCut());
            assertTrue(Files.exists(file) != Files.exists(dir(name).resolve("g")), "one name, seed " + seed);
        }
    }

    @Test
    void aWriteCutByThePowerReachesTheFileOnlyAsAPrefix() throws Exception {
        boolean sawPrefix = false;
        for (long seed = 0; seed < 40; seed++) {
            String name = "d" + seed;
            FaultyDisk disk = disk(name, seed);
            Path file = dir(name).resolve("f");
            durableFile(disk, file, filled(8, 1));
            DiskFile f = disk.open(file, false);
            disk.powerCutAt(disk.calls() + 1);
            IOException e = assertThrows(IOException.class, () -> write(f, 0, filled(8, 2)));
            assertEquals("power cut", e.getMessage());
            byte[] after = Files.readAllBytes(file);
            assertEquals(8 * PAGE, after.length);
            for (int s = 0; s < after.length; s += SECTOR) {
                assertTrue(sectorIs(after, s, 1) || sectorIs(after, s, 2), "seed " + seed);
            }
            for (int s = 7 * PAGE; s < 8 * PAGE; s += SECTOR) {
                assertTrue(sectorIs(after, s, 1), "the last page is past any prefix that reached the file, seed " + seed);
            }
            sawPrefix |= sectorIs(after, 0, 2);
        }
        assertTrue(sawPrefix, "no cut write ever reached the file");
    }

    @Test
    void aPunchIsUndoneLikeAWrite() throws Exception {
        boolean sawOld = false;
        for (long seed = 0; seed < SEEDS / 4; seed++) {
            String name = "d" + seed;
            FaultyDisk disk = disk(name, seed);
            Path file = dir(name).resolve("f");
            durableFile(disk, file, filled(2, 1));
            Disk punching = RealDisk.of((p, off, len) -> {
                try (DiskFile r = RealDisk.of(null).open(p, false)) {
                    r.writeFully(ByteBuffer.allocate((int) len), off);
                }
                return true;
            });
            FaultyDisk d2 = new FaultyDisk(punching, root.resolve(name + ".g2"), seed);
            DiskFile f = d2.open(file, false);
            assertTrue(f.punch(0, PAGE));
            d2.powerCut();
            byte[] after = Files.readAllBytes(file);
            for (int s = 0; s < PAGE; s += SECTOR) {
                assertTrue(sectorIs(after, s, 1) || sectorIs(after, s, 0), "seed " + seed);
            }
            sawOld |= sectorIs(after, 0, 1) && sectorIs(after, PAGE - SECTOR, 1);
        }
        assertTrue(sawOld, "a punch was never undone");
        FaultyDisk nopunch = disk("np", 1);
        Path file = dir("np").resolve("f");
        durableFile(nopunch, file, filled(1, 1));
        try (DiskFile f = nopunch.open(file, false)) {
            assertFalse(f.punch(0, PAGE), "the delegate cannot punch");
        }
    }

    /** A workload of creates, writes, forces, renames, deletes and syncs in two directories, then the cut. */
    private Map<String, byte[]> workloadThenCut(String name, long seed) throws IOException {
        FaultyDisk disk = disk(name, seed);
        Path a = dir(name).resolve("a");
        Path b = dir(name).resolve("b");
        Files.createDirectories(a);
        Files.createDirectories(b);
        Random r = new Random(42); // the same workload every time; the disk's seed decides the rest
        DiskFile[] files = new DiskFile[6];
        for (int i = 0; i < files.length; i++) {
            files[i] = disk.open((i % 2 == 0 ? a : b).resolve("f" + i), true);
        }
        disk.syncDirectory(a);
        for (int step = 0; step < 200; step++) {
            int i = r.nextInt(files.length);
            Path dirOf = i % 2 == 0 ? a : b;
            switch (r.nextInt(10)) {
                case 0:
                    files[i].force(r.nextBoolean());
                    break;
                case 1:
                    disk.syncDirectory(dirOf);
                    break;
                case 2:
                    files[i].truncate(r.nextInt(6 * PAGE));
                    break;
                case 3:
                    disk.rename(dirOf.resolve("f" + i), dirOf.resolve("f" + (i + 2) % files.length));
                    files[i].close();
                    files[i] = disk.open(dirOf.resolve("f" + i), true); // the name again, a new file
                    break;
                case 4:
                    disk.delete(dirOf.resolve("f" + i));
                    files[i].close();
                    files[i] = disk.open(dirOf.resolve("f" + i), true);
                    break;
                default:
                    byte[] data = new byte[1 + r.nextInt(3 * PAGE)];
                    r.nextBytes(data);
                    write(files[i], r.nextInt(5 * PAGE), data);
            }
        }
        disk.powerCut();
        Map<String, byte[]> tree = new TreeMap<>();
        try (Stream<Path> all = Files.walk(dir(name))) {
            for (Path p : (Iterable<Path>) all.filter(Files::isRegularFile)::iterator) {
                tree.put(dir(name).relativize(p).toString(), Files.readAllBytes(p));
            }
        }
        return tree;
    }

    @Test
    void deterministicForASeed() throws Exception {
        boolean seedsDiffer = false;
        for (long seed = 0; seed < 10; seed++) {
            Map<String, byte[]> first = workloadThenCut("x" + seed, seed);
            Map<String, byte[]> second = workloadThenCut("y" + seed, seed);
            assertEquals(first.keySet(), second.keySet(), "seed " + seed);
            for (String name : first.keySet()) {
                assertArrayEquals(first.get(name), second.get(name), name + ", seed " + seed);
            }
            Map<String, byte[]> other = workloadThenCut("z" + seed, seed + 1000);
            seedsDiffer |= !other.keySet().equals(first.keySet())
                    || other.keySet().stream().anyMatch(n -> !Arrays.equals(other.get(n), first.get(n)));
        }
        if (!seedsDiffer) {
            fail("the seed changed nothing");
        }
    }

    @Test
    void aFailedReadFailsOnceAndABadSectorUntilItIsWritten() throws Exception {
        FaultyDisk disk = disk("r", 1);
        Path file = dir("r").resolve("f");
        durableFile(disk, file, filled(4, 1));
        DiskFile f = disk.open(file, false);
        ByteBuffer page = ByteBuffer.allocate(PAGE);
        long before = disk.reads();
        disk.failRead(before + 2);
        assertEquals(PAGE, f.read(page.clear(), 0));
        assertThrows(IOException.class, () -> f.read(page.clear(), 0), "the second read from now");
        assertEquals(PAGE, f.read(page.clear(), 0), "once");
        assertEquals(before + 3, disk.reads());

        disk.failReads(file, PAGE + 100, 2 * PAGE); // inside pages 1 to 3
        assertEquals(PAGE, f.read(page.clear(), 0));
        assertThrows(IOException.class, () -> f.read(page.clear(), PAGE));
        assertThrows(IOException.class, () -> f.read(page.clear(), 3 * PAGE), "every time");
        assertThrows(IOException.class, () -> disk.readAll(file));
        write(f, PAGE, filled(2, 5)); // pages 1 and 2 written: the sector's start is good again
        assertEquals(PAGE, f.read(page.clear(), PAGE));
        assertEquals(5, page.get(0));
        assertThrows(IOException.class, () -> f.read(page.clear(), 3 * PAGE), "page 3 is not written yet");
        write(f, 3 * PAGE, filled(1, 6));
        assertEquals(4 * PAGE, disk.readAll(file).length);
        assertEquals(5, disk.failures(), "each failed read counts");
        f.close();
    }
}
