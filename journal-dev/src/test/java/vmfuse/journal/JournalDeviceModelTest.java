package vmfuse.journal;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Journal devices against a byte array, with checkpoints running concurrently (the freeze and
 * drain of memory into MapDB), the memory bound forcing more, and across close and kill -9.
 */
class JournalDeviceModelTest {
    static final long MEMORY = 4L << 20; // the smallest bound: writers wait on checkpoints often

    @TempDir
    Path dir;

    @ParameterizedTest(name = "seed {0}")
    @ValueSource(longs = {1, 2, 3, 4})
    void behavesLikeAByteArrayWhileCheckpointsRun(long seed) throws Exception {
        Path file = dir.resolve("j.db");
        Durability mode = seed % 2 == 0 ? Durability.CLOSE : Durability.FLUSH;
        DeviceModel m = new DeviceModel(seed);
        AtomicBoolean stop = new AtomicBoolean();
        AtomicReference<Throwable> failed = new AtomicReference<>();
        try (JournalStore s = JournalStore.open(file, MEMORY)) {
            JournalDevice d = s.create("vm", 0, mode);
            Thread checkpoints = new Thread(() -> {
                Random r = new Random(seed);
                try {
                    while (!stop.get()) {
                        s.checkpoint();
                        Thread.sleep(r.nextInt(4));
                    }
                } catch (Throwable e) {
                    failed.set(e);
                }
            });
            checkpoints.start();
            try {
                for (int i = 0; i < 1500; i++) {
                    long[] touched = m.step(d);
                    m.checkRange(d, touched[0], touched[1], "step " + i);
                    if (i % 100 == 99) {
                        m.check(d, "step " + i);
                        d.flush();
                    }
                    assertTrue(s.memoryHeld() <= MEMORY + (1 << 20), "memory held " + s.memoryHeld());
                }
            } finally {
                stop.set(true);
                checkpoints.join(30_000);
            }
            assertEquals(null, failed.get());
            s.checkpoint();
            assertEquals(0, s.memoryHeld(), "a checkpoint with no writer running empties memory");
            assertEquals(0, s.blockMemory().taken(), "every slot of memory given back");
            assertTrue(s.memoryAllocated() <= MEMORY + (2 << 20), "allocated " + s.memoryAllocated());
            assertEquals(m.nonZeroBlocks(), d.blocksStored(), "the store holds exactly the non-zero blocks");
            assertTrue(s.checkpoints() > 5, s.checkpoints() + " checkpoints");
        }
        try (JournalStore s = JournalStore.open(file, MEMORY)) {
            m.check(s.device("vm"), "after reopening");
            assertEquals(m.nonZeroBlocks(), s.device("vm").blocksStored());
        }
    }

    /**
     * A checkpoint that fails after its freeze leaves blocks frozen; the next freeze merges the
     * newer writes into them (the usual freeze, with nothing frozen, hands the map over whole).
     * Freezes with no drain between them stand in for such failures: reads, the checkpoint after
     * them and a reopen all see the model.
     */
    @ParameterizedTest(name = "seed {0}")
    @ValueSource(longs = {5, 6})
    void whatAFailedCheckpointLeftFrozenMergesWithNewerWrites(long seed) throws Exception {
        Path file = dir.resolve("j.db");
        DeviceModel m = new DeviceModel(seed);
        try (JournalStore s = JournalStore.open(file, 64L << 20)) {
            JournalDevice d = s.create("vm", 0, Durability.CLOSE);
            for (int round = 0; round < 6; round++) {
                for (int i = 0; i < 150; i++) {
                    long[] touched = m.step(d);
                    m.checkRange(d, touched[0], touched[1], "round " + round + " step " + i);
                }
                d.freeze(); // no drain: what a failed checkpoint leaves
                m.check(d, "after freeze " + round);
            }
            s.checkpoint();
            m.check(d, "after the checkpoint");
            assertEquals(0, s.memoryHeld(), "the checkpoint drained every frozen block");
            assertEquals(0, s.blockMemory().taken(), "every slot of memory given back");
            assertEquals(m.nonZeroBlocks(), d.blocksStored());
        }
        try (JournalStore s = JournalStore.open(file, 64L << 20)) {
            m.check(s.device("vm"), "after reopening");
        }
    }

    /**
     * A child JVM runs the model's operations on a FLUSH device in rounds, each ending with a
     * flush, while another thread checkpoints without pause; it is killed with SIGKILL after a
     * round, at whatever point its checkpoint is. Reopened, the device equals the model at the
     * last flush.
     */
    @ParameterizedTest(name = "seed {0}")
    @ValueSource(longs = {11, 12, 13})
    void afterAKillTheDeviceIsTheModelAtTheLastFlush(long seed) throws Exception {
        Path file = dir.resolve("j.db");
        int rounds = 5 + new Random(seed).nextInt(20);
        ProcessBuilder pb = new ProcessBuilder(ProcessHandle.current().info().command().orElse("java"),
                "-cp", System.getProperty("java.class.path"), Child.class.getName(), file.toString(), "" + seed);
        pb.redirectError(ProcessBuilder.Redirect.INHERIT);
        Process child = pb.start();
        try (BufferedReader in = new BufferedReader(new InputStreamReader(child.getInputStream()));
                PrintStream out = new PrintStream(child.getOutputStream(), true)) {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
            int done = 0;
            String line;
            while (done < rounds && System.nanoTime() < deadline && (line = in.readLine()) != null) {
                if (line.startsWith("flushed ")) {
                    done = Integer.parseInt(line.substring(8));
                    if (done < rounds) {
                        out.println("go");
                    }
                }
            }
            assertEquals(rounds, done, "rounds the child flushed");
        } finally {
            child.destroyForcibly(); // SIGKILL
            assertTrue(child.waitFor(30, TimeUnit.SECONDS));
        }
        DeviceModel m = new DeviceModel(seed);
        for (int i = 0; i < rounds * Child.STEPS; i++) {
            m.step(null);
        }
        try (JournalStore s = JournalStore.open(file, MEMORY)) {
            m.check(s.device("vm"), "after kill -9 at round " + rounds);
        }
    }

    /** The process {@link #afterAKillTheDeviceIsTheModelAtTheLastFlush} kills. */
    public static final class Child {
        static final int STEPS = 40;

        public static void main(String[] args) throws Exception {
            JournalStore s = JournalStore.open(Path.of(args[0]), MEMORY);
            JournalDevice d = s.create("vm", 0, Durability.FLUSH);
            Thread checkpoints = new Thread(() -> {
                try {
                    while (true) {
                        s.checkpoint();
                    }
                } catch (Throwable e) {
                    e.printStackTrace();
                    System.exit(3);
                }
            });
            checkpoints.setDaemon(true);
            checkpoints.start();
            DeviceModel m = new DeviceModel(Long.parseLong(args[1]));
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
            for (int round = 1; ; round++) {
                for (int i = 0; i < STEPS; i++) {
                    m.step(d);
                }
                d.flush();
                System.out.println("flushed " + round);
                System.out.flush();
                if (!"go".equals(in.readLine())) {
                    Thread.sleep(60_000);
                }
            }
        }
    }
}
