package vmfuse.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Queue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CpuPriorityTest {
    private static final int MIB = 1 << 20;

    /** A Nice that remembers each thread's value instead of setting it, and counts the calls. */
    static final class Recorded implements CpuPriority.Nice {
        final Map<Thread, Integer> now = new ConcurrentHashMap<>();
        final Queue<String> calls = new ConcurrentLinkedQueue<>();
        volatile boolean refuse;

        @Override
        public boolean set(int nice) {
            calls.add(Thread.currentThread().getName() + "=" + nice);
            if (refuse) {
                return false;
            }
            now.put(Thread.currentThread(), nice);
            return true;
        }

        int current() {
            return now.getOrDefault(Thread.currentThread(), 0);
        }
    }

    @Test
    void payloadsOf128KiBOrMoreAreBulkAndAChangeOfClassIsOneCall() {
        Recorded nice = new Recorded();
        CpuPriority cpu = new CpuPriority(nice);
        cpu.doing(4096);
        assertEquals(List.of(), List.copyOf(nice.calls), "a thread starts at 0: nothing to change");
        cpu.doing(MIB);
        cpu.doing(128 << 10);
        assertEquals(10, nice.current());
        assertEquals(1, nice.calls.size(), "one call for the change, none while it stays bulk: " + nice.calls);
        cpu.doing((128 << 10) - 1);
        assertEquals(0, nice.current(), "under 128 KiB");
        cpu.doing(MIB);
        cpu.doing(0); // a flush, a trim: they copy nothing
        assertEquals(0, nice.current());
        assertEquals(4, nice.calls.size(), String.valueOf(nice.calls));
        assertTrue(cpu.enabled());
        assertFalse(CpuPriority.NONE.enabled());
        CpuPriority.NONE.doing(MIB); // and does nothing
    }

    @Test
    void aRefusedChangeStopsEveryChangeAfterIt() {
        Recorded nice = new Recorded();
        CpuPriority cpu = new CpuPriority(nice);
        nice.refuse = true;
        cpu.doing(MIB);
        assertFalse(cpu.enabled());
        cpu.doing(4096);
        cpu.doing(MIB);
        assertEquals(1, nice.calls.size(), "no more tries: " + nice.calls);
    }

    /**
     * Through the server, with qemu-io as the client: every read and write reaches the export on a
     * thread at its class's priority, whichever thread does it (the connection's own, a worker),
     * FUA or not (qemu-io writes through: every write has FUA), and the threads change class when
     * the requests do, not at every request.
     */
    @Test
    void everyReadAndWriteIsDoneAtItsClasssPriority(@TempDir Path dir) throws Exception {
        Recorded nice = new Recorded();
        MemoryExport disk = new MemoryExport(64 * MIB);
        List<String> wrong = new ArrayList<>();
        AtomicInteger seen = new AtomicInteger();
        disk.onIo = (op, length) -> {
            seen.incrementAndGet();
            int want = length >= CpuPriority.BULK_BYTES ? CpuPriority.BULK_NICE : 0;
            if (nice.current() != want) {
                synchronized (wrong) {
                    wrong.add(op + " of " + length + " on " + Thread.currentThread().getName() + " at nice "
                            + nice.current());
                }
            }
        };
        NbdServer.Limits limits = new NbdServer.Limits(8, 8, Duration.ofSeconds(30), Duration.ofSeconds(30));
        try (Scheduler scheduler = new Scheduler(4, new CpuPriority(nice))) {
            NbdServer server = NbdServer.listen(dir.resolve("nbd.sock"), MemoryExport.serving(Map.of("disk", disk)),
                    limits, scheduler);
            try {
                List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
                for (int i = 0; i < 16; i++) {
                    cmd.addAll(List.of("-c", "aio_write " + i + "M 1M"));
                }
                cmd.addAll(List.of("-c", "aio_flush"));
                for (int i = 0; i < 16; i++) {
                    cmd.addAll(List.of("-c", "aio_write " + (i * 4) + "k 4k"));
                }
                cmd.addAll(List.of("-c", "aio_flush", "-c", "read 0 8M", "-c", "read 4M 4k", "-c", "read 0 1M",
                        "-c", "flush"));
                cmd.add("nbd+unix:///disk?socket=" + server.socket());
                NbdServerTest.run(cmd.toArray(String[]::new)).ok();
            } finally {
                server.close();
            }
        }
        assertEquals(List.of(), wrong, "calls: " + nice.calls);
        assertTrue(seen.get() >= 16 + 16 + 3, "every request reached the export: " + seen.get());
        assertTrue(nice.calls.stream().anyMatch(c -> c.endsWith("=10")) && nice.calls.stream().anyMatch(c -> c.endsWith("=0")),
                String.valueOf(nice.calls));
        // 5 threads (the connection's and 4 workers), each changing with the phases (1M writes, 4K
        // writes, an 8M read, 4K, 1M): a call per request would be 35 or more
        assertTrue(nice.calls.size() <= 5 * 5 + 2, "a call per change of class, not per request: " + nice.calls);
    }
}
