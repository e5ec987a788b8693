package vmfuse.nbd;

import java.nio.ByteBuffer;
import java.util.ArrayDeque;

/**
 * The direct buffers requests' data waits in, from one budget for the whole server, half of it at
 * most per tenant (a user on the unix socket, a key identity on TCP: however many connections it
 * opens), and a smaller one per connection ({@link Account}): a client that sends faster than the
 * disk takes its data stops being read when its account is spent, all clients together hold at
 * most the server's budget whatever they send, and one tenant holding its share (say, large
 * writes whose payload trickles in) leaves the other half to the others. Sizes are powers of two from 4 KiB to {@link #MAX}; a buffer given
 * back is kept for the next request of its size, and dropped when another size needs the room.
 */
final class Buffers {
    static final int MIN = 4096;
    static final int MAX = 4 << 20;
    private static final int CLASSES = Integer.numberOfTrailingZeros(MAX / MIN) + 1;

    private final long budget;
    /** Bytes of buffers made and not dropped: handed out or kept. */
    private long made;
    @SuppressWarnings("unchecked")
    private final ArrayDeque<ByteBuffer>[] kept = new ArrayDeque[CLASSES];

    Buffers(long budget) {
        if (budget < MAX) {
            throw new IllegalArgumentException("a budget of " + budget + " bytes holds no request of " + MAX);
        }
        this.budget = budget;
        for (int i = 0; i < CLASSES; i++) {
            kept[i] = new ArrayDeque<>();
        }
    }

    static int sizeFor(int n) {
        if (n > MAX) {
            throw new IllegalArgumentException(n + " bytes is more than a buffer holds (" + MAX + ")");
        }
        return Math.max(MIN, Integer.highestOneBit(Math.max(1, n) - 1) << 1);
    }

    private static int classOf(int size) {
        return Integer.numberOfTrailingZeros(size / MIN);
    }

    /** A buffer for {@code n} bytes (its limit), waiting for room in the budget. */
    synchronized ByteBuffer take(int n) throws InterruptedException {
        int size = sizeFor(n);
        ArrayDeque<ByteBuffer> mine = kept[classOf(size)];
        while (true) {
            ByteBuffer b = mine.pollFirst();
            if (b != null) {
                return b.clear().limit(n);
            }
            if (made + size > budget) {
                dropKept(made + size - budget);
            }
            if (made + size <= budget) {
                ByteBuffer fresh = ByteBuffer.allocateDirect(size); // counted once it is there
                made += size;
                return fresh.limit(n);
            }
            wait();
        }
    }

    /** Drops kept buffers (of any size) until {@code need} bytes are freed or none is kept. */
    private void dropKept(long need) {
        for (int i = CLASSES - 1; i >= 0 && need > 0; i--) {
            while (need > 0 && !kept[i].isEmpty()) {
                kept[i].pollFirst(); // the collector frees its memory
                made -= MIN << i;
                need -= MIN << i;
            }
        }
    }

    synchronized void give(ByteBuffer b) {
        kept[classOf(b.capacity())].addLast(b);
        notifyAll();
    }

    /** A connection's part of the budget: at most {@code cap} bytes of buffers at once. */
    Account account(long cap) {
        return account(cap, "");
    }

    /** As {@link #account(long)}, for a connection of {@code tenant}, whose connections hold half the budget at most. */
    Account account(long cap, String tenant) {
        Share share;
        synchronized (shares) {
            share = shares.computeIfAbsent(tenant, t -> new Share(Math.max(MAX, budget / 2)));
        }
        return new Account(cap, share);
    }

    /** Bytes of buffers all of one tenant's connections hold. */
    private static final class Share {
        private final long cap;
        private long held; // guarded by this

        Share(long cap) {
            this.cap = cap;
        }

        synchronized void take(int size) throws InterruptedException {
            while (held + size > cap) {
                wait();
            }
            held += size;
        }

        synchronized void give(int size) {
            held -= size;
            notifyAll();
        }
    }

    private final java.util.Map<String, Share> shares = new java.util.HashMap<>();

    final class Account {
        private final long cap;
        private final Share share;
        private long held;

        private Account(long cap, Share share) {
            if (cap < MAX) {
                throw new IllegalArgumentException("an account of " + cap + " bytes holds no request of " + MAX);
            }
            this.cap = cap;
            this.share = share;
        }

        /** A buffer for {@code n} bytes, once this account and the server have room for it. */
        ByteBuffer take(int n) throws InterruptedException {
            int size = sizeFor(n);
            synchronized (this) {
                while (held + size > cap) {
                    wait();
                }
                held += size;
            }
            boolean shared = false;
            try {
                share.take(size);
                shared = true;
                return Buffers.this.take(n);
            } catch (InterruptedException | RuntimeException | Error e) {
                if (shared) {
                    share.give(size);
                }
                synchronized (this) {
                    held -= size;
                    notifyAll();
                }
                throw e;
            }
        }

        void give(ByteBuffer b) {
            Buffers.this.give(b);
            share.give(b.capacity());
            synchronized (this) {
                held -= b.capacity();
                notifyAll();
            }
        }
    }
}
