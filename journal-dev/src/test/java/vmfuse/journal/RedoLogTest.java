package vmfuse.journal;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class RedoLogTest {
    @TempDir
    Path dir;

    private static List<String> replay(Path file, long generation) throws Exception {
        List<String> seen = new ArrayList<>();
        long[] n = new long[1];
        try (RedoLog log = RedoLog.open(file, generation,
                (type, root, a, b, data) -> seen.add(type + ":" + root + ":" + a + ":" + b + ":" + new String(data)), n)) {
            assertEquals(seen.size(), n[0]);
        }
        return seen;
    }

    /** An empty log of {@code generation} at {@code file}, open for appending. */
    private static RedoLog fresh(Path file, long generation) throws Exception {
        RedoLog log = RedoLog.open(file, generation, (t, r, a, b, d) -> { }, new long[1]);
        log.restart(generation);
        return log;
    }

    @Test
    void recordsOfTheCurrentGenerationReplayInOrder() throws Exception {
        Path file = dir.resolve("r.redo");
        try (RedoLog log = fresh(file, 7)) {
            log.append(RedoLog.WRITE, 11, 4096, 0, "abc".getBytes(), 0, 3);
            log.append(RedoLog.ZERO, 11, 0, 512, null, 0, 0);
            log.append(RedoLog.SIZE, 12, 1 << 20, 0, null, 0, 0);
            log.force();
        }
        assertEquals(List.of("1:11:4096:0:abc", "2:11:0:512:", "3:12:1048576:0:"), replay(file, 7));
    }

    @Test
    void aLogOfAnOlderGenerationIsIgnored() throws Exception {
        // a crash after the checkpoint's commit (generation 8) but before the log restarted
        Path file = dir.resolve("r.redo");
        try (RedoLog log = fresh(file, 7)) {
            log.append(RedoLog.WRITE, 11, 0, 0, "old".getBytes(), 0, 3);
            log.force();
        }
        assertTrue(replay(file, 8).isEmpty());
    }

    @Test
    void replayStopsAtATornOrCorruptRecord() throws Exception {
        Path file = dir.resolve("r.redo");
        try (RedoLog log = fresh(file, 1)) {
            log.append(RedoLog.WRITE, 5, 0, 0, "first".getBytes(), 0, 5);
            log.append(RedoLog.WRITE, 5, 8, 0, "second".getBytes(), 0, 6);
            log.force();
        }
        byte[] bytes = Files.readAllBytes(file);
        bytes[bytes.length - 2] ^= 0x55; // a bit flip in the last record's data: its checksum fails
        Files.write(file, bytes);
        assertEquals(List.of("1:5:0:0:first"), replay(file, 1));
        Files.write(file, java.util.Arrays.copyOf(bytes, bytes.length - 3)); // torn: cut short
        assertEquals(List.of("1:5:0:0:first"), replay(file, 1));
    }

    @Test
    void aFileThatIsNotARedoLogIsRefused() throws Exception {
        Path file = dir.resolve("r.redo");
        Files.write(file, "definitely not a redo log".getBytes());
        StoreException e = assertThrows(StoreException.class, () -> replay(file, 1));
        assertTrue(e.getMessage().contains("not a vmfuse redo log"), e.getMessage());
    }
}
