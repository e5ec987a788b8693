package vmfuse.fs.mount;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import vmfuse.durable.Parking;

/** The FUSE request threads, served from a queue instead of /dev/fuse: parked waits never take the last threads. */
@Timeout(60)
class FuseWorkersTest {
    private static final Runnable END = () -> { };
    private final BlockingQueue<Runnable> requests = new LinkedBlockingQueue<>();
    private final FuseWorkers workers = new FuseWorkers(2, 2, 4, Duration.ZERO, "test", () -> serveOne());

    private BooleanSupplier serveOne() {
        return () -> {
            try {
                Runnable r = requests.take();
                if (r == END) {
                    return false;
                }
                r.run();
                return true;
            } catch (InterruptedException e) {
                return false;
            }
        };
    }

    /** A request that waits, parked, until {@code release}; completes with whether the wait was allowed. */
    private CompletableFuture<Boolean> parkingRequest(CountDownLatch release, CountDownLatch parked) {
        CompletableFuture<Boolean> allowed = new CompletableFuture<>();
        requests.add(() -> {
            if (!Parking.begin()) {
                allowed.complete(false);
                return;
            }
            try {
                parked.countDown();
                release.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            } finally {
                Parking.end();
            }
            allowed.complete(true);
        });
        return allowed;
    }

    private CompletableFuture<Void> plainRequest() {
        CompletableFuture<Void> done = new CompletableFuture<>();
        requests.add(() -> done.complete(null));
        return done;
    }

    private void end() throws InterruptedException {
        for (int i = workers.threads(); i > 0; i--) {
            requests.add(END);
        }
        workers.awaitEnd();
        assertEquals(0, workers.threads());
    }

    @Test
    void parkedRequestsNeverTakeTheLastThreadsAndPastTheBoundAreRefused() throws Exception {
        workers.start();
        CountDownLatch release = new CountDownLatch(1);
        CountDownLatch parked = new CountDownLatch(2);
        CompletableFuture<Boolean> first = parkingRequest(release, parked);
        CompletableFuture<Boolean> second = parkingRequest(release, parked);
        assertTrue(parked.await(30, TimeUnit.SECONDS), "both requests parked");
        assertEquals(2, workers.parked());
        assertEquals(4, workers.threads(), "a spare lent for each parked thread");
        // both base threads' worth of service is still there
        plainRequest().get(30, TimeUnit.SECONDS);
        plainRequest().get(30, TimeUnit.SECONDS);
        // at the bound (4 threads, 2 parked): a third wait is refused at once, and nothing hangs
        assertFalse(parkingRequest(release, new CountDownLatch(1)).get(30, TimeUnit.SECONDS));
        assertEquals(1, workers.refused());
        assertEquals(4, workers.peak());
        plainRequest().get(30, TimeUnit.SECONDS);

        release.countDown();
        assertTrue(first.get(30, TimeUnit.SECONDS));
        assertTrue(second.get(30, TimeUnit.SECONDS));
        // spares end once more than the base threads serve: each after its next request
        for (int i = 0; i < 50 && workers.threads() > 2; i++) {
            plainRequest().get(30, TimeUnit.SECONDS);
        }
        assertEquals(2, workers.threads());
        assertEquals(0, workers.parked());
        end();
    }

    @Test
    void waitsWithinTheReserveLendNoThread() throws Exception {
        FuseWorkers wide = new FuseWorkers(4, 2, 6, Duration.ZERO, "wide", this::serveOne);
        wide.start();
        CountDownLatch release = new CountDownLatch(1);
        CountDownLatch parked = new CountDownLatch(2);
        CompletableFuture<Boolean> one = parkingRequest(release, parked);
        CompletableFuture<Boolean> two = parkingRequest(release, parked);
        assertTrue(parked.await(30, TimeUnit.SECONDS));
        assertEquals(4, wide.threads(), "two of four wait, two are free: none lent");
        CountDownLatch third = new CountDownLatch(1);
        CompletableFuture<Boolean> three = parkingRequest(release, third);
        assertTrue(third.await(30, TimeUnit.SECONDS));
        assertEquals(5, wide.threads(), "a third would leave one free: a spare is lent");
        plainRequest().get(30, TimeUnit.SECONDS);
        release.countDown();
        assertTrue(one.get(30, TimeUnit.SECONDS) && two.get(30, TimeUnit.SECONDS) && three.get(30, TimeUnit.SECONDS));
        for (int i = 0; i < 50 && wide.threads() > 4; i++) {
            plainRequest().get(30, TimeUnit.SECONDS);
        }
        assertEquals(4, wide.threads());
        for (int i = wide.threads(); i > 0; i--) {
            requests.add(END);
        }
        wide.awaitEnd();
    }

    /** Spares outlive the waits that needed them by the linger: a steady load of waits reuses them. */
    @Test
    void sparesLingerAfterTheLastWaitThatNeededThem() throws Exception {
        FuseWorkers lingering = new FuseWorkers(1, 1, 3, Duration.ofSeconds(30), "linger", this::serveOne);
        lingering.start();
        CountDownLatch release = new CountDownLatch(1);
        CountDownLatch parked = new CountDownLatch(1);
        CompletableFuture<Boolean> one = parkingRequest(release, parked);
        assertTrue(parked.await(30, TimeUnit.SECONDS));
        assertEquals(2, lingering.threads());
        release.countDown();
        assertTrue(one.get(30, TimeUnit.SECONDS));
        for (int i = 0; i < 20; i++) {
            plainRequest().get(30, TimeUnit.SECONDS);
        }
        assertEquals(2, lingering.threads(), "the spare stays within its linger");
        CountDownLatch again = new CountDownLatch(1);
        CountDownLatch parkedAgain = new CountDownLatch(1);
        CompletableFuture<Boolean> two = parkingRequest(again, parkedAgain);
        assertTrue(parkedAgain.await(30, TimeUnit.SECONDS));
        again.countDown();
        assertTrue(two.get(30, TimeUnit.SECONDS));
        assertEquals(2, lingering.started(), "the next wait was served by the spare that lingered: none started");
        for (int i = lingering.threads(); i > 0; i--) {
            requests.add(END);
        }
        lingering.awaitEnd();
    }

    @Test
    void aWaitInsideAWaitIsOneWait() throws Exception {
        workers.start();
        CompletableFuture<Integer> parkedInside = new CompletableFuture<>();
        CompletableFuture<Integer> parkedAfter = new CompletableFuture<>();
        requests.add(() -> {
            Parking.begin();
            Parking.begin();
            parkedInside.complete(workers.parked());
            Parking.end();
            Parking.end();
            parkedAfter.complete(workers.parked());
        });
        assertEquals(1, parkedInside.get(30, TimeUnit.SECONDS));
        assertEquals(0, parkedAfter.get(30, TimeUnit.SECONDS));
        end();
    }

    @Test
    void aThreadOfNoPoolWaitsAsItWould() {
        assertTrue(Parking.begin());
        Parking.end();
    }

    @Test
    void theBoundsAreChecked() {
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> new FuseWorkers(1, 0, 4, Duration.ZERO, "x", this::serveOne));
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> new FuseWorkers(2, 3, 4, Duration.ZERO, "x", this::serveOne));
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> new FuseWorkers(4, 2, 3, Duration.ZERO, "x", this::serveOne));
    }
}
