package vmfuse.fs.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ControlServerTest {
    @TempDir
    Path dir;

    /** A long request (a `vm reclaim`) does not hold up the others (a `vmfuse status`). */
    @Test
    void aLongRequestDoesNotHoldUpTheOthers() throws Exception {
        CountDownLatch release = new CountDownLatch(1);
        Path sock = dir.resolve("c.sock");
        try (ControlServer server = new ControlServer(sock, line -> {
            if (line.equals("slow")) {
                try {
                    release.await(60, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            return "ok " + line + "\n";
        })) {
            CompletableFuture<String> slow = CompletableFuture.supplyAsync(() -> {
                try {
                    return ControlServer.request(sock, "slow");
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            Thread.sleep(200); // the slow one is being served
            CompletableFuture<String> fast = CompletableFuture.supplyAsync(() -> {
                try {
                    return ControlServer.request(sock, "status");
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            assertEquals("ok status\n", fast.get(10, TimeUnit.SECONDS));
            release.countDown();
            assertEquals("ok slow\n", slow.get(10, TimeUnit.SECONDS));
        }
    }
}
