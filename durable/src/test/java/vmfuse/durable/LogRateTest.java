package vmfuse.durable;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

import org.junit.jupiter.api.Test;

class LogRateTest {
    @Test
    void linesPastTheRateAreCountedAndReportedOnceInTheNextSecond() {
        AtomicLong now = new AtomicLong(1_000_000_000L);
        LogRate rate = new LogRate(3, now::get);
        List<Long> reported = new ArrayList<>();
        int allowed = 0;
        for (int i = 0; i < 10; i++) {
            allowed += rate.allow(reported::add) ? 1 : 0;
        }
        assertEquals(3, allowed, "three lines in the first second");
        assertEquals(List.of(), reported);
        now.addAndGet(999_999_999L);
        assertEquals(false, rate.allow(reported::add), "still the first second");
        now.addAndGet(1);
        assertEquals(true, rate.allow(reported::add));
        assertEquals(List.of(8L), reported, "the 8 held back, reported once");
        now.addAndGet(5_000_000_000L);
        assertEquals(true, rate.allow(reported::add));
        assertEquals(List.of(8L), reported, "nothing more was held back");
    }
}
