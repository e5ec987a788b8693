package vmfuse.journal;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

/**
 * When block memory goes back: a checkpoint that empties it (trim) keeps what an interval needed
 * within the last minute or so, and gives the rest back once no interval needed it for a minute
 * (before, the first checkpoint that found memory unused gave it back, and the next burst paid
 * for every chunk again: allocation, and the first touch of its pages).
 */
class BlockMemoryTest {
    private static final long MIB = 1 << 20;
    private static final long SECOND = 1_000_000_000L;
    private long now;

    /** Takes {@code mib} MiB of slots and gives them back, as a burst of writes and its checkpoint's drain do. */
    private static void burst(BlockMemory m, int mib) throws StoreException {
        List<Integer> slots = new ArrayList<>();
        for (int i = 0; i < mib * 256; i++) {
            slots.add(m.take());
        }
        for (int s : slots) {
            m.give(s);
        }
    }

    @Test
    void chunksStayWhileBurstsComeBackWithinAMinuteAndGoWithinTwoIdleOnes() throws Exception {
        BlockMemory m = new BlockMemory(() -> now);
        burst(m, 64);
        m.trim(8); // the burst's checkpoint
        assertEquals(64 * MIB, m.capacity());
        now += 5 * SECOND;
        m.trim(8); // the timer's, 5 s later, the store idle: kept
        assertEquals(64 * MIB, m.capacity());
        now += 50 * SECOND;
        burst(m, 64); // a burst within the minute: no chunk allocated anew
        m.trim(8);
        assertEquals(64 * MIB, m.capacity());
        for (int i = 0; i < 12; i++) { // idle a minute, a checkpoint every 5 s
            now += 5 * SECOND;
            m.trim(8);
        }
        assertEquals(64 * MIB, m.capacity(), "used a minute ago: kept");
        for (int i = 0; i < 12; i++) {
            now += 5 * SECOND;
            m.trim(8);
        }
        assertEquals(8 * MIB, m.capacity(), "no interval needed it for two minutes: all but the first 8 MiB back");
    }

    @Test
    void aLongSilenceWithNoCheckpointGivesItBackAtTheNext() throws Exception {
        BlockMemory m = new BlockMemory(() -> now);
        burst(m, 32);
        m.trim(4);
        now += 10 * 60 * SECOND;
        m.trim(4);
        assertEquals(4 * MIB, m.capacity());
    }

    @Test
    void nothingGoesBackWhileASlotIsTaken() throws Exception {
        BlockMemory m = new BlockMemory(() -> now);
        burst(m, 16);
        int held = m.take();
        now += 10 * 60 * SECOND;
        m.trim(1);
        assertEquals(16 * MIB, m.capacity());
        m.give(held);
        now += 10 * 60 * SECOND;
        m.trim(1);
        m.trim(1);
        assertEquals(1 * MIB, m.capacity());
    }
}
