package vmfuse.journal;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.junit.jupiter.api.Test;

/** The memory bound alone: writers wait at it, a checkpoint's outcome reaches them, the checkpointer is woken. */
class MemoryBudgetTest {
    private static final long MIB = 1 << 20;
    private static final long BLOCKS_PER_MIB = MIB / RadixBlockStore.BLOCK_SIZE;

    private static CompletableFuture<Void> admitInBackground(MemoryBudget b) {
        return CompletableFuture.runAsync(() -> {
            try {
                b.admit();
            } catch (StoreException e) {
                throw new RuntimeException(e);
            }
        });
    }

    private static void assertStillWaiting(CompletableFuture<?> f) throws Exception {
        assertThrows(TimeoutException.class, () -> f.get(300, TimeUnit.MILLISECONDS));
    }

    @Test
    void belowTheBoundAWriteGoesOnAtItItWaitsUntilBlocksAreReleased() throws Exception {
        MemoryBudget b = new MemoryBudget(4 * MIB);
        b.added(4 * BLOCKS_PER_MIB - 1);
        b.admit(); // one block below: at once
        b.added(1);
        assertEquals(4 * MIB, b.held());
        CompletableFuture<Void> w = admitInBackground(b);
        assertStillWaiting(w);
        assertTrue(CompletableFuture.supplyAsync(b::awaitCheckpointRequest).get(10, TimeUnit.SECONDS),
                "the wait asked for a checkpoint");
        b.released(1);
        w.get(10, TimeUnit.SECONDS);
    }

    @Test
    void aCheckpointThatFailsAfterTheWaitBeganFailsItWithItsErrno() throws Exception {
        MemoryBudget b = new MemoryBudget(4 * MIB);
        b.checkpointFailed(new StoreException(StoreException.EIO, "an earlier failure"));
        b.added(4 * BLOCKS_PER_MIB);
        CompletableFuture<Void> w = admitInBackground(b);
        assertStillWaiting(w); // a failure from before the wait does not end it
        b.checkpointFailed(new StoreException(StoreException.ENOSPC, "the disk is full"));
        ExecutionException e = assertThrows(ExecutionException.class, () -> w.get(10, TimeUnit.SECONDS));
        StoreException se = (StoreException) e.getCause().getCause();
        assertEquals(StoreException.ENOSPC, se.errno());
        assertTrue(se.getMessage().contains("the checkpoint that frees it failed: the disk is full"), se.getMessage());
    }

    @Test
    void closingFailsTheWaitersAndEndsTheCheckpointer() throws Exception {
        MemoryBudget b = new MemoryBudget(4 * MIB);
        b.added(4 * BLOCKS_PER_MIB);
        CompletableFuture<Void> w = admitInBackground(b);
        assertStillWaiting(w);
        b.close();
        ExecutionException e = assertThrows(ExecutionException.class, () -> w.get(10, TimeUnit.SECONDS));
        assertEquals(StoreException.EIO, ((StoreException) e.getCause().getCause()).errno());
        assertFalse(CompletableFuture.supplyAsync(b::awaitCheckpointRequest).get(10, TimeUnit.SECONDS));
    }

    @Test
    void lessThanFourMibIsRefused() {
        assertEquals(StoreException.EINVAL, assertThrows(StoreException.class, () -> new MemoryBudget(MIB)).errno());
    }
}
