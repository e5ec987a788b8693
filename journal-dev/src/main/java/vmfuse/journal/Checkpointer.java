package vmfuse.journal;

import java.nio.file.Path;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The journal store's checkpoint thread: it waits for a request (the memory bound reached, a
 * full log segment: see {@link MemoryBudget#requestCheckpoint}) and runs the store's checkpoint;
 * a failure is logged, and the waiters it concerns are told by the budget. It ends with the
 * budget's close.
 */
final class Checkpointer {
    private static final Logger log = LoggerFactory.getLogger(Checkpointer.class);

    /** The store's checkpoint. */
    @FunctionalInterface
    interface Checkpoint {
        void run() throws StoreException;
    }

    private final Thread thread;

    Checkpointer(MemoryBudget budget, Checkpoint checkpoint, Path file) {
        this.thread = new Thread(() -> {
            while (budget.awaitCheckpointRequest()) {
                try {
                    checkpoint.run();
                } catch (StoreException e) {
                    log.error("journal checkpoint failed file={}: {}", file, e.getMessage());
                }
            }
        }, "journal-checkpoint");
        this.thread.setDaemon(true);
    }

    void start() {
        thread.start();
    }

    /** Ends the thread (after the budget's close, which ends its wait). */
    void stop() {
        thread.interrupt();
    }
}
