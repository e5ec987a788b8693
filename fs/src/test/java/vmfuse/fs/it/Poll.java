package vmfuse.fs.it;

import java.util.function.BooleanSupplier;
import java.util.function.Supplier;

/**
 * Waiting, bounded, for what the kernel or the daemon does after a call has returned: a FUSE
 * release (and libfuse's unlink of a hidden file) runs after close(2) and exit(2) have returned,
 * a timer fires, a child process opens its socket.
 */
final class Poll {
    static final long DEFAULT_SECONDS = 30;

    private Poll() {
    }

    static void until(BooleanSupplier done, Supplier<String> what) {
        until(done, what, DEFAULT_SECONDS);
    }

    static void until(BooleanSupplier done, Supplier<String> what, long seconds) {
        long deadline = System.nanoTime() + seconds * 1_000_000_000L;
        while (!done.getAsBoolean()) {
            if (System.nanoTime() - deadline > 0) {
                throw new AssertionError("not within " + seconds + " s: " + what.get());
            }
            try {
                Thread.sleep(50);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new AssertionError("interrupted waiting for: " + what.get());
            }
        }
    }
}
