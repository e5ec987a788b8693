package vmfuse.fs.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import vmfuse.fs.nativeio.Native;

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
    /**
     * Clients that connect and send nothing hold no worker past the line wait, and while every
     * worker is busy and the queue full, a request is answered EBUSY at once: a review found such
     * requests dropped unanswered, their sockets never closed, and every later `status` hanging.
     */
    @Test
    void silentClientsAreHungUpOnAndAFullServerAnswersBusy() throws Exception {
        Path sock = dir.resolve("c.sock");
        try (ControlServer server = new ControlServer(sock, line -> "ok " + line + "\n", Duration.ofSeconds(2))) {
            List<SocketChannel> silent = new ArrayList<>();
            for (int i = 0; i < 4 + 16; i++) { // every worker and the whole queue
                silent.add(SocketChannel.open(UnixDomainSocketAddress.of(sock)));
            }
            Thread.sleep(200);
            long t0 = System.nanoTime();
            String busy = request(sock).get(10, TimeUnit.SECONDS);
            assertTrue(busy.startsWith("error " + Native.EBUSY + " "), busy);
            assertTrue(System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(2), "answered at once");
            try {
                assertEquals(-1, silent.get(0).read(ByteBuffer.allocate(1)), "hung up on after the line wait");
            } catch (IOException reset) {
                // hung up on: closed by the server with the client's side still open
            }
            String served = "";
            for (int i = 0; i < 100 && !served.equals("ok status\n"); i++) {
                served = request(sock).get(10, TimeUnit.SECONDS);
                Thread.sleep(100);
            }
            assertEquals("ok status\n", served, "served again");
            for (SocketChannel c : silent) {
                c.close();
            }
        }
    }

    private static CompletableFuture<String> request(Path sock) {
        return CompletableFuture.supplyAsync(() -> {
            try {
                return ControlServer.request(sock, "status");
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        });
    }
}
