package vmfuse.fs.nativeio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;

/** Against the kernel: the nice value the scheduler sees, in /proc, for one thread and not its neighbours. */
class ThreadNiceTest {
    /** The calling thread's nice value as the kernel has it: field 19 of /proc/thread-self/stat. */
    static int niceNow() throws IOException {
        String stat = Files.readString(Path.of("/proc/thread-self/stat"));
        String[] after = stat.substring(stat.lastIndexOf(')') + 2).split(" "); // from field 3, the state
        return Integer.parseInt(after[19 - 3]);
    }

    @Test
    void aThreadGoesDownAndBackAloneAndTheCheckSaysItCan() throws Exception {
        assertEquals(0, niceNow());
        AtomicReference<Object> seen = new AtomicReference<>();
        Thread t = new Thread(() -> {
            try {
                assertTrue(ThreadNice.set(10));
                int down = niceNow();
                assertTrue(ThreadNice.set(0));
                seen.set(new int[] {down, niceNow()});
            } catch (Throwable e) {
                seen.set(e);
            }
        });
        t.start();
        t.join(10_000);
        if (seen.get() instanceof Throwable e) {
            throw new AssertionError(e);
        }
        int[] got = (int[]) seen.get();
        assertEquals(10, got[0], "lowered");
        assertEquals(0, got[1], "and raised back (root may)");
        assertEquals(0, niceNow(), "another thread of the process is not touched");
        assertNull(ThreadNice.check(10), "root can go down and back");
    }
}
