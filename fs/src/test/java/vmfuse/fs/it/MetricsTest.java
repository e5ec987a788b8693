package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * vmfuse mount --metrics: Prometheus' text format, as promtool checks it, and counters that move
 * with what they count: a punch, a journal device's flushes, an export's NBD requests.
 */
@Tag("integration")
class MetricsTest {
    static final long MiB = 1 << 20;
    static Path socketDir;
    static Path socket;
    static Mounted m;
    static URI metrics;

    @BeforeAll
    static void mount() throws Exception {
        socketDir = Files.createTempDirectory(Path.of("/tmp"), "vmfuse-metrics-");
        socket = socketDir.resolve("nbd.sock");
        m = Mounted.onTmpfs("512m", "--nbd", "unix:" + socket, "--metrics", "127.0.0.1:0"); // port 0: any, logged
        m.awaitLog("metrics at "); // the log reaches the file in batches
        Matcher where = Pattern.compile("metrics at (http://127\\.0\\.0\\.1:\\d+/metrics)").matcher(m.log());
        assertTrue(where.find(), m.log());
        metrics = URI.create(where.group(1));
    }

    @AfterAll
    static void unmount() throws Exception {
        m.close();
        Proc.run("rm", "-rf", socketDir.toString());
    }

    private static String scrape() throws Exception {
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(metrics).timeout(Duration.ofSeconds(20)).build(),
                HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode(), r.body());
        return r.body();
    }

    /**
     * A scrape once {@code ready} holds of it (30 s at most): a request is counted when its reply
     * is sent, and a client when the server reads its hang-up, both a little after the client
     * that made them has exited.
     */
    private static String scrapeWhen(java.util.function.Predicate<String> ready) throws Exception {
        String[] text = {scrape()};
        Poll.until(() -> {
            try {
                return ready.test(text[0] = scrape());
            } catch (Exception e) {
                throw new AssertionError(e);
            }
        }, () -> text[0]);
        return text[0];
    }

    /** The value of the sample {@code series} (name and labels as exposed), or -1 if absent. */
    private static double value(String text, String series) {
        return text.lines().filter(l -> l.startsWith(series + " ")).map(l -> Double.parseDouble(l.substring(series.length() + 1)))
                .findFirst().orElse(-1.0);
    }

    @Test
    void promtoolFindsTheExpositionClean() throws Exception {
        Path scraped = socketDir.resolve("scrape.txt");
        Files.writeString(scraped, scrape());
        Proc.Result r = Proc.run(Duration.ofSeconds(30), "bash", "-c", "promtool check metrics < \"$1\"", "-",
                scraped.toString());
        assertEquals(0, r.exit(), r.out() + r.err());
        assertEquals("", r.out().trim() + r.err().trim(), "no lint problems");
        String text = Files.readString(scraped);
        assertTrue(text.contains("\nvmfuse_journal_store_broken 0.0\n") || text.contains("\nvmfuse_journal_store_broken 0\n"),
                "a healthy store:\n" + text);
        for (String family : new String[] {"vmfuse_store_free_bytes", "vmfuse_released_bytes_total",
                "vmfuse_journal_store_memory_limit_bytes", "vmfuse_journal_checkpoint_seconds", "jvm_memory_used_bytes",
                "vmfuse_journal_store_broken", "vmfuse_journal_store_reopens_total"}) {
            assertTrue(text.contains("# TYPE " + family + " "), family + " in:\n" + text);
        }
    }

    @Test
    void aPunchMovesItsCounters() throws Exception {
        Path img = m.image("p.raw");
        Proc.ok("dd", "if=/dev/urandom", "of=" + img, "bs=1M", "count=8", "conv=fsync", "status=none");
        String before = scrape();
        double released = value(before, "vmfuse_released_bytes_total{reason=\"punch-hole\"}");
        double events = value(before, "vmfuse_releases_total{reason=\"punch-hole\"}");
        assertTrue(released >= 0, before);
        assertEquals(8 * MiB, value(before, "vmfuse_image_allocated_bytes{image=\"p.raw\"}"), before);

        Proc.ok("fallocate", "-p", "-o", String.valueOf(2 * MiB), "-l", String.valueOf(3 * MiB), img.toString());
        String after = scrape();
        assertEquals(released + 3 * MiB, value(after, "vmfuse_released_bytes_total{reason=\"punch-hole\"}"), after);
        assertEquals(events + 1, value(after, "vmfuse_releases_total{reason=\"punch-hole\"}"), after);
        assertEquals(3 * MiB, value(after,
                "vmfuse_volume_released_bytes_total{reason=\"punch-hole\",volume=\"images/p.raw\"}"), after);
        assertEquals(5 * MiB, value(after, "vmfuse_image_allocated_bytes{image=\"p.raw\"}"), after);

        Files.delete(img); // an image gone: its own series go, the totals keep what it gave back
        String gone = scrape();
        assertFalse(gone.contains("volume=\"images/p.raw\""), gone);
        assertFalse(gone.contains("image=\"p.raw\""), gone);
        assertEquals(5 * MiB, value(gone, "vmfuse_released_bytes_total{reason=\"unlink\"}")
                - value(after, "vmfuse_released_bytes_total{reason=\"unlink\"}"), gone);
    }

    @Test
    void journalFlushesFillTheirHistogram() throws Exception {
        m.vmfuse("journal", "create", "jm", "--size", "16M", m.mnt.toString()).assertOk();
        String before = scrape();
        double count = Math.max(0, value(before, "vmfuse_journal_flush_seconds_count{device=\"jm\"}"));
        Proc.ok("python3", "-c", """
                import os, sys
                fd = os.open(sys.argv[1], os.O_WRONLY)
                for i in range(7):
                    os.pwrite(fd, b'j' * 4096, i * 4096)
                    os.fsync(fd)
                os.close(fd)
                """, m.mnt.resolve("journals/jm").toString());
        String after = scrape();
        assertEquals(count + 7, value(after, "vmfuse_journal_flush_seconds_count{device=\"jm\"}"), after);
        assertEquals(count + 7, value(after, "vmfuse_journal_flush_seconds_bucket{device=\"jm\",le=\"+Inf\"}"), after);
        assertTrue(value(after, "vmfuse_journal_flush_seconds_sum{device=\"jm\"}") > 0, after);
        assertEquals(7 * 4096, value(after, "vmfuse_journal_stored_bytes{device=\"jm\"}"), after);

        // a punch of the device is counted under its path; a rename takes its counts along
        Proc.ok("fallocate", "-p", "-o", "0", "-l", "8192", m.mnt.resolve("journals/jm").toString());
        Proc.ok("mv", m.mnt.resolve("journals/jm").toString(), m.mnt.resolve("journals/jn").toString());
        String moved = scrape();
        assertEquals(8192, value(moved, "vmfuse_volume_released_bytes_total{reason=\"punch-hole\",volume=\"journals/jn\"}"),
                moved);
        assertFalse(moved.contains("volume=\"journals/jm\""), moved);
    }

    @Test
    void nbdRequestsAreCountedByExportAndClass() throws Exception {
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", m.image("n.raw").toString(), "16M");
        m.vmfuse("export", "add", "vmn", "--uid", "65534", "--image", "images/n.raw", "--weight", "3", "--limit-iops", "5000",
                m.mnt.toString()).assertOk();
        // root uses the volume; its requests count under the export that holds it. writeback: qemu-io's
        // default (writethrough) sends FUA writes, which are of the flush class
        Proc.ok("qemu-io", "-f", "raw", "-t", "writeback", "-c", "write -P 0x11 0 1M", "-c", "flush", "-c", "read -P 0x11 0 1M",
                "-c", "discard 0 512k", "nbd+unix:///images/n.raw?socket=" + socket);
        String text = scrapeWhen(t -> value(t, "vmfuse_nbd_requests_total{class=\"trim\",export=\"vmn\"}") >= 1
                && value(t, "vmfuse_nbd_clients{export=\"vmn\"}") == 0);
        assertTrue(value(text, "vmfuse_nbd_requests_total{class=\"write\",export=\"vmn\"}") >= 1, text);
        assertEquals(MiB, value(text, "vmfuse_nbd_bytes_total{class=\"write\",export=\"vmn\"}"), text);
        assertEquals(MiB, value(text, "vmfuse_nbd_bytes_total{class=\"read\",export=\"vmn\"}"), text);
        assertTrue(value(text, "vmfuse_nbd_requests_total{class=\"flush\",export=\"vmn\"}") >= 1, text);
        assertEquals(1, value(text, "vmfuse_nbd_requests_total{class=\"trim\",export=\"vmn\"}"), text);
        for (String c : new String[] {"read", "write", "flush", "trim"}) { // every request in its histogram
            assertEquals(value(text, "vmfuse_nbd_requests_total{class=\"" + c + "\",export=\"vmn\"}"),
                    value(text, "vmfuse_nbd_request_seconds_count{class=\"" + c + "\",export=\"vmn\"}"), text);
        }
        assertEquals(3, value(text, "vmfuse_nbd_weight{export=\"vmn\"}"), text);
        assertEquals(5000, value(text, "vmfuse_nbd_limit_iops{export=\"vmn\"}"), text);
        assertEquals(0, value(text, "vmfuse_nbd_clients{export=\"vmn\"}"), text);
    }

    /** A port that cannot be had fails the mount with the reason; a malformed address, the command line. */
    @Test
    void anAddressThatCannotBeServedRefusesTheMount() throws Exception {
        try (ServerSocket taken = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress());
                Mounted other = Mounted.prepare()) {
            Proc.Result r = other.vmfuse("mount", "--store", other.store.toString(), "--metrics",
                    "127.0.0.1:" + taken.getLocalPort(), other.mnt.toString());
            assertFalse(r.ok(), r.out());
            assertTrue(r.err().contains("cannot serve metrics at 127.0.0.1:" + taken.getLocalPort()), r.err());
            assertFalse(Proc.run("mountpoint", "-q", other.mnt.toString()).ok(), "nothing mounted");
            Proc.Result bad = other.vmfuse("mount", "--store", other.store.toString(), "--metrics", "9577",
                    other.mnt.toString());
            assertEquals(2, bad.exit(), bad.err());
            assertTrue(bad.err().contains("--metrics takes HOST:PORT, not '9577'"), bad.err());
        }
    }
}
