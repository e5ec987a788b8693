package vmfuse.reclaimer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class ThresholdPolicyTest {
    static final long GiB = 1L << 30;

    /** Free space over time (GiB of a 100 GiB disk) and the threshold after each observation. */
    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', textBlock = """
            starts at the free fraction          | 40          | 0.40
            rises by the growth of free space    | 40 50       | 0.50
            rises linearly, step by step         | 40 45 50 60 | 0.60
            halves when free space shrinks       | 40 30       | 0.20
            halves at every shrink               | 40 30 29 28 | 0.05
            shrink then growth                   | 40 20 30    | 0.30
            unchanged when free space is         | 40 40 40    | 0.40
            never above one                      | 90 100      | 1.00
            an empty disk starts at zero         | 0           | 0.00
            """)
    void thresholdFollowsTheHostDisk(String why, String freeGiB, double expected) {
        String[] steps = freeGiB.trim().split(" +");
        ThresholdPolicy p = new ThresholdPolicy(Long.parseLong(steps[0]) * GiB, 100 * GiB);
        for (int i = 1; i < steps.length; i++) {
            p.observeDisk(Long.parseLong(steps[i]) * GiB, 100 * GiB);
        }
        assertEquals(expected, p.threshold(), 1e-9, why);
    }

    /** Bytes waiting in a 1000-byte image, the threshold, and whether they go now. */
    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', textBlock = """
            below the threshold: they wait       | 249  | 25 | false
            at the threshold: they go            | 250  | 25 | true
            above it                             | 1000 | 25 | true
            nothing waiting never goes           | 0    | 0  | false
            an empty host disk: anything goes    | 1    | 0  | true
            """)
    void waitingBytesGoWhenTheirSumReachesTheThreshold(String why, long pending, long freeGiB, boolean due) {
        ThresholdPolicy p = new ThresholdPolicy(freeGiB * GiB, 100 * GiB);
        assertEquals(due, p.due(pending, 1000), why);
    }

    @Test
    void aFillingDiskMakesWaitingBytesGoWithoutANewNotice() {
        ThresholdPolicy p = new ThresholdPolicy(40 * GiB, 100 * GiB); // 0.40 of 1000 = 400
        assertFalse(p.due(200, 1000));
        p.observeDisk(30 * GiB, 100 * GiB); // 0.20 -> 200
        assertTrue(p.due(200, 1000));
        p.observeDisk(90 * GiB, 100 * GiB); // 0.80
        assertFalse(p.due(200, 1000));
    }

    @Test
    void nonsenseIsRefused() {
        assertThrows(IllegalArgumentException.class, () -> new ThresholdPolicy(2, 1));
        assertThrows(IllegalArgumentException.class, () -> new ThresholdPolicy(1, 0));
        ThresholdPolicy p = new ThresholdPolicy(1, 2);
        assertThrows(IllegalArgumentException.class, () -> p.due(-1, 10));
        assertThrows(IllegalArgumentException.class, () -> p.due(1, 0));
    }
}
