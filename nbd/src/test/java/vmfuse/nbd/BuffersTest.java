package vmfuse.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(30)
class BuffersTest {

    @Test
    void sizesArePowersOfTwoFromAPage() {
        assertEquals(4096, Buffers.sizeFor(0));
        assertEquals(4096, Buffers.sizeFor(1));
        assertEquals(4096, Buffers.sizeFor(4096));
        assertEquals(8192, Buffers.sizeFor(4097));
        assertEquals(Buffers.MAX, Buffers.sizeFor(Buffers.MAX));
        assertThrows(IllegalArgumentException.class, () -> Buffers.sizeFor(Buffers.MAX + 1));
    }

    @Test
    void anAccountPastItsCapWaitsForABufferToComeBack() throws Exception {
        Buffers pool = new Buffers(4L * Buffers.MAX);
        Buffers.Account account = pool.account(Buffers.MAX);
        ByteBuffer first = account.take(Buffers.MAX / 2);
        ByteBuffer second = account.take(Buffers.MAX / 2);
        assertEquals(Buffers.MAX / 2, first.limit());
        CompletableFuture<ByteBuffer> third = CompletableFuture.supplyAsync(() -> take(account, 100));
        assertThrows(TimeoutException.class, () -> third.get(300, TimeUnit.MILLISECONDS), "the account is spent");
        account.give(first);
        ByteBuffer b = third.get(10, TimeUnit.SECONDS);
        assertEquals(100, b.limit());
        account.give(b);
        account.give(second);
    }

    /**
     * One tenant's connections together hold half the server's budget at most: with that spent
     * (say, large writes whose payload trickles in), its next connection waits and another
     * tenant's is served. (A review found 16 connections of one user holding all of it, and every
     * other tenant's reads and writes waiting.)
     */
    @Test
    void aTenantHoldsHalfTheBudgetAtMostHoweverManyConnectionsItOpens() throws Exception {
        Buffers pool = new Buffers(4L * Buffers.MAX);
        Buffers.Account a1 = pool.account(Buffers.MAX, "user:hog");
        Buffers.Account a2 = pool.account(Buffers.MAX, "user:hog");
        Buffers.Account a3 = pool.account(Buffers.MAX, "user:hog");
        ByteBuffer h1 = a1.take(Buffers.MAX);
        ByteBuffer h2 = a2.take(Buffers.MAX);
        CompletableFuture<ByteBuffer> third = CompletableFuture.supplyAsync(() -> take(a3, 4096));
        assertThrows(TimeoutException.class, () -> third.get(300, TimeUnit.MILLISECONDS), "the tenant's half is spent");
        Buffers.Account other = pool.account(Buffers.MAX, "user:other");
        ByteBuffer o = other.take(Buffers.MAX); // the other half is there
        other.give(o);
        a1.give(h1);
        a3.give(third.get(10, TimeUnit.SECONDS));
        a2.give(h2);
    }

    @Test
    void theServerBudgetBoundsAllAccountsTogetherAndKeptBuffersAreReused() throws Exception {
        Buffers pool = new Buffers(Buffers.MAX);
        Buffers.Account a = pool.account(Buffers.MAX);
        Buffers.Account b = pool.account(Buffers.MAX);
        ByteBuffer held = a.take(Buffers.MAX);
        CompletableFuture<ByteBuffer> other = CompletableFuture.supplyAsync(() -> take(b, 4096));
        assertThrows(TimeoutException.class, () -> other.get(300, TimeUnit.MILLISECONDS), "the server's budget is spent");
        a.give(held);
        ByteBuffer small = other.get(10, TimeUnit.SECONDS); // the kept 4 MiB buffer is dropped to make room
        assertTrue(small.isDirect());
        b.give(small);
        ByteBuffer again = b.take(4096);
        assertSame(small, again, "a buffer given back is taken again for a request of its size");
        assertFalse(again.position() != 0 || again.limit() != 4096);
    }

    private static ByteBuffer take(Buffers.Account account, int n) {
        try {
            return account.take(n);
        } catch (InterruptedException e) {
            throw new IllegalStateException(e);
        }
    }
}
