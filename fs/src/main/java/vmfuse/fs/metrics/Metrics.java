package vmfuse.fs.metrics;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.FileStore;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;

import io.prometheus.metrics.exporter.httpserver.HTTPServer;
import io.prometheus.metrics.instrumentation.jvm.JvmMetrics;
import io.prometheus.metrics.model.registry.MultiCollector;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import io.prometheus.metrics.model.snapshots.ClassicHistogramBuckets;
import io.prometheus.metrics.model.snapshots.CounterSnapshot;
import io.prometheus.metrics.model.snapshots.CounterSnapshot.CounterDataPointSnapshot;
import io.prometheus.metrics.model.snapshots.GaugeSnapshot;
import io.prometheus.metrics.model.snapshots.GaugeSnapshot.GaugeDataPointSnapshot;
import io.prometheus.metrics.model.snapshots.HistogramSnapshot;
import io.prometheus.metrics.model.snapshots.HistogramSnapshot.HistogramDataPointSnapshot;
import io.prometheus.metrics.model.snapshots.Labels;
import io.prometheus.metrics.model.snapshots.MetricSnapshot;
import io.prometheus.metrics.model.snapshots.MetricSnapshots;
import io.prometheus.metrics.model.snapshots.SummarySnapshot;
import io.prometheus.metrics.model.snapshots.SummarySnapshot.SummaryDataPointSnapshot;
import vmfuse.fs.FsException;
import vmfuse.fs.images.ImagesDir;
import vmfuse.fs.nativeio.StructStat;
import vmfuse.fs.space.ReleaseLedger;
import vmfuse.journal.JournalDevice;
import vmfuse.journal.JournalStore;
import vmfuse.nbd.Scheduler;
import vmfuse.reclaimer.Skipped;
import vmfuse.reclaimer.VmReclaimer;

/**
 * The daemon's metrics, in Prometheus' exposition format (vmfuse mount --metrics HOST:PORT):
 * read when scraped from what {@code vmfuse status} reads, never kept twice. Counters count
 * since the daemon started (a restart is a counter reset, which rate() takes in its stride),
 * but for the images' sizes and allocation, which are the store's own.
 *
 * <pre>
 *   vmfuse_store_size_bytes, vmfuse_store_free_bytes       the filesystem holding STORE/images
 *   vmfuse_image_{size,allocated}_bytes{image}             per image (its path under images/)
 *   vmfuse_image_open_handles{image}
 *   vmfuse_released_bytes_total{reason}, vmfuse_releases_total{reason}
 *                                                           every release since start (gone images' too)
 *   vmfuse_volume_released_bytes_total{volume,reason}, vmfuse_volume_releases_total{volume,reason}
 *                                                           per image or device still there (images/..., journals/...)
 *   vmfuse_journal_{size,stored,memory}_bytes{device}, vmfuse_journal_flush_seconds{device} (histogram)
 *   vmfuse_journal_store_memory_{held,limit,allocated}_bytes, vmfuse_journal_store_disk_bytes,
 *   vmfuse_journal_checkpoint_seconds (count and sum), vmfuse_journal_log_syncs_total,
 *   vmfuse_journal_flushes_unforced_total, vmfuse_journal_store_broken, vmfuse_journal_store_reopens_total
 *   vmfuse_reclaim_{notices,refused}_total{vm}, vmfuse_reclaim_pending_bytes{vm},
 *   vmfuse_reclaim_{punched,freed}_bytes_total{vm}, vmfuse_reclaim_skipped_bytes_total{vm,reason},
 *   vmfuse_vm_failed{vm}                                    1 per VM registered that could not start
 *   vmfuse_nbd_requests_total{export,class}, vmfuse_nbd_bytes_total{export,class},
 *   vmfuse_nbd_request_seconds{export,class} (histogram: arrival to the end of the work),
 *   vmfuse_nbd_clients{export}, vmfuse_nbd_queued_requests{export},
 *   vmfuse_nbd_{weight,reservation_iops,limit_iops}{export}
 *   jvm_*, process_*                                        the JVM's own (heap, direct buffers, GC, threads)
 * </pre>
 *
 * An NBD {@code export} is the export's name, or the volume's path where root uses a volume no
 * export holds; {@code class} is read, write, flush (FLUSH and FUA writes) or trim (TRIM and
 * WRITE_ZEROES).
 */
public final class Metrics implements MultiCollector {
    /** What the metrics are read from: the daemon's parts. */
    public record Sources(Path images, ImagesDir backing, Supplier<Map<String, Integer>> openCounts,
            ReleaseLedger ledger, JournalStore journals, Supplier<Map<String, VmReclaimer.Stats>> vms,
            Supplier<List<String>> failedVms, Scheduler scheduler) {}

    /**
     * Histogram bounds, in microseconds: 16 µs to 16.8 s in powers of two (the buckets the
     * journal's and the scheduler's log2 counts fall in exactly), then +Inf.
     */
    private static final int FIRST_BOUND_LOG2 = 4;
    private static final int LAST_BOUND_LOG2 = 24;

    private final Sources s;

    public Metrics(Sources sources) {
        this.s = sources;
    }

    /**
     * Serves these metrics and the JVM's at http://ADDRESS/metrics until closed; fails (with the
     * reason) if the address cannot be bound.
     */
    public static HTTPServer serve(InetSocketAddress address, Metrics metrics) throws IOException {
        PrometheusRegistry registry = new PrometheusRegistry();
        registry.register(metrics);
        JvmMetrics.builder().register(registry);
        return HTTPServer.builder().inetAddress(address.getAddress()).port(address.getPort()).registry(registry)
                .buildAndStart();
    }

    @Override
    public MetricSnapshots collect() {
        List<MetricSnapshot> out = new ArrayList<>();
        store(out);
        releases(out);
        journals(out);
        reclaimer(out);
        nbd(out);
        return new MetricSnapshots(out);
    }

    private void store(List<MetricSnapshot> out) {
        try {
            FileStore space = Files.getFileStore(s.images());
            out.add(gauge("vmfuse_store_size_bytes", "Size of the filesystem holding the store's images.",
                    List.of(point(space.getTotalSpace(), Labels.EMPTY))));
            out.add(gauge("vmfuse_store_free_bytes", "Space left to an unprivileged user on that filesystem.",
                    List.of(point(space.getUsableSpace(), Labels.EMPTY))));
        } catch (IOException e) {
            // the store's filesystem cannot be asked: its two gauges are absent from this scrape
        }
        List<GaugeDataPointSnapshot> size = new ArrayList<>();
        List<GaugeDataPointSnapshot> allocated = new ArrayList<>();
        List<GaugeDataPointSnapshot> open = new ArrayList<>();
        Map<String, Integer> openCounts = s.openCounts().get();
        Map<String, StructStat.Usage> images;
        try {
            images = s.backing().usages();
        } catch (FsException e) {
            images = Map.of(); // images/ cannot be listed: no image series in this scrape
        }
        for (Map.Entry<String, StructStat.Usage> e : images.entrySet()) {
            String name = e.getKey();
            StructStat.Usage u = e.getValue();
            Labels l = Labels.of("image", name);
            size.add(point(u.size(), l));
            allocated.add(point(u.allocated(), l));
            open.add(point(openCounts.getOrDefault(name, 0), l));
        }
        out.add(gauge("vmfuse_image_size_bytes", "An image's size.", size));
        out.add(gauge("vmfuse_image_allocated_bytes", "Bytes an image takes in the store.", allocated));
        out.add(gauge("vmfuse_image_open_handles", "Open handles on an image, through the mount and NBD.", open));
    }

    private void releases(List<MetricSnapshot> out) {
        ReleaseLedger.Count[] total = s.ledger().totalSinceStart();
        List<CounterDataPointSnapshot> bytes = new ArrayList<>();
        List<CounterDataPointSnapshot> events = new ArrayList<>();
        for (ReleaseLedger.Reason r : ReleaseLedger.Reason.values()) {
            Labels l = Labels.of("reason", r.label());
            bytes.add(count(total[r.ordinal()].bytes(), l));
            events.add(count(total[r.ordinal()].events(), l));
        }
        out.add(counter("vmfuse_released_bytes", "Backing space given back, by reason, since the daemon started.",
                bytes));
        out.add(counter("vmfuse_releases", "Releases of backing space (punches, zeroed ranges, truncations, "
                + "unlinks, reclaims), by reason, since the daemon started.", events));
        List<CounterDataPointSnapshot> volumeBytes = new ArrayList<>();
        List<CounterDataPointSnapshot> volumeEvents = new ArrayList<>();
        for (Map.Entry<String, ReleaseLedger.Count[]> e : s.ledger().sinceStartByName().entrySet()) {
            for (ReleaseLedger.Reason r : ReleaseLedger.Reason.values()) {
                ReleaseLedger.Count c = e.getValue()[r.ordinal()];
                if (c.events() > 0) {
                    Labels l = Labels.of("volume", e.getKey(), "reason", r.label());
                    volumeBytes.add(count(c.bytes(), l));
                    volumeEvents.add(count(c.events(), l));
                }
            }
        }
        out.add(counter("vmfuse_volume_released_bytes", "Backing space an image or journal device still there "
                + "gave back, by reason, since the daemon started.", volumeBytes));
        out.add(counter("vmfuse_volume_releases", "Releases of an image or journal device still there, by reason.",
                volumeEvents));
    }

    private void journals(List<MetricSnapshot> out) {
        JournalStore j = s.journals();
        List<GaugeDataPointSnapshot> size = new ArrayList<>();
        List<GaugeDataPointSnapshot> stored = new ArrayList<>();
        List<GaugeDataPointSnapshot> memory = new ArrayList<>();
        List<HistogramDataPointSnapshot> flushes = new ArrayList<>();
        for (JournalDevice d : j.list()) {
            if (d.name().startsWith(vmfuse.fs.Node.HIDDEN_PREFIX)) {
                continue;
            }
            Labels l = Labels.of("device", d.name());
            size.add(point(d.size(), l));
            stored.add(point(d.bytesStored(), l));
            memory.add(point(d.memoryUsed(), l));
            flushes.add(histogram(d.flushLatency(), d.flushNanos(), l));
        }
        out.add(gauge("vmfuse_journal_size_bytes", "A journal device's size.", size));
        out.add(gauge("vmfuse_journal_stored_bytes", "Bytes a journal device holds (blocks not all zeros).", stored));
        out.add(gauge("vmfuse_journal_memory_bytes", "Memory a journal device holds: blocks waiting for a "
                + "checkpoint and its radix tree's nodes.", memory));
        out.add(histograms("vmfuse_journal_flush_seconds",
                "How long a journal device's flushes (fsync through the mount, FLUSH over NBD) took.", flushes));
        out.add(gauge("vmfuse_journal_store_memory_held_bytes", "Journal blocks held in memory, all devices.",
                List.of(point(j.memoryHeld(), Labels.EMPTY))));
        out.add(gauge("vmfuse_journal_store_memory_limit_bytes", "The bound on them (--journal-memory): writers "
                + "wait for a checkpoint past it.", List.of(point(j.memoryLimit(), Labels.EMPTY))));
        out.add(gauge("vmfuse_journal_store_memory_allocated_bytes", "Direct memory allocated for journal blocks.",
                List.of(point(j.memoryAllocated(), Labels.EMPTY))));
        out.add(gauge("vmfuse_journal_store_disk_bytes", "The journal store's size on disk.",
                List.of(point(j.bytesOnDisk(), Labels.EMPTY))));
        out.add(SummarySnapshot.builder().name("vmfuse_journal_checkpoint_seconds")
                .help("Checkpoints that committed something, and the time they took.")
                .dataPoint(SummaryDataPointSnapshot.builder().count(j.checkpoints())
                        .sum(j.checkpointNanos() / 1e9).build()).build());
        out.add(counter("vmfuse_journal_log_syncs", "fdatasyncs of the journal store's redo log (each serves every "
                + "flush waiting for it).", List.of(count(j.syncs(), Labels.EMPTY))));
        out.add(counter("vmfuse_journal_flushes_unforced", "Flushes of flush-mode devices that found the redo log "
                + "on disk already (nothing appended since the last fdatasync) and forced nothing.",
                List.of(count(j.flushesWithNothingToForce(), Labels.EMPTY))));
        out.add(gauge("vmfuse_journal_store_broken", "1 while the journal store takes no commits (a change of its "
                + "index failed part way; the daemon's log says why) until it is opened again in place.",
                List.of(point(j.broken() ? 1 : 0, Labels.EMPTY))));
        out.add(counter("vmfuse_journal_store_reopens", "Times the journal store was opened again in place (vmfuse "
                + "journal reopen, or a checkpoint that found it broken).", List.of(count(j.reopens(), Labels.EMPTY))));
    }

    private void reclaimer(List<MetricSnapshot> out) {
        List<CounterDataPointSnapshot> notices = new ArrayList<>();
        List<CounterDataPointSnapshot> refused = new ArrayList<>();
        List<GaugeDataPointSnapshot> pending = new ArrayList<>();
        List<CounterDataPointSnapshot> punched = new ArrayList<>();
        List<CounterDataPointSnapshot> freed = new ArrayList<>();
        List<CounterDataPointSnapshot> skipped = new ArrayList<>();
        for (Map.Entry<String, VmReclaimer.Stats> e : s.vms().get().entrySet()) {
            Labels l = Labels.of("vm", e.getKey());
            VmReclaimer.Stats st = e.getValue();
            notices.add(count(st.notices(), l));
            refused.add(count(st.refused(), l));
            pending.add(point(st.bytesPending(), l));
            punched.add(count(st.bytesPunched(), l));
            freed.add(count(st.bytesFreed(), l));
            for (Skipped why : Skipped.values()) {
                skipped.add(count(st.skipped().getOrDefault(why, 0L),
                        Labels.of("vm", e.getKey(), "reason", why.name().toLowerCase(java.util.Locale.ROOT).replace('_', '-'))));
            }
        }
        out.add(counter("vmfuse_reclaim_notices", "Notices of deleted ranges a VM's agent sent, acknowledged.",
                notices));
        out.add(counter("vmfuse_reclaim_refused", "Notices refused (busy, malformed): the agent sends them again.",
                refused));
        out.add(gauge("vmfuse_reclaim_pending_bytes", "Bytes of notices waiting to be punched.", pending));
        out.add(counter("vmfuse_reclaim_punched_bytes", "Bytes the reclaimer punched in a VM's image.", punched));
        out.add(counter("vmfuse_reclaim_freed_bytes", "Backing space those punches gave back.", freed));
        out.add(counter("vmfuse_reclaim_skipped_bytes", "Bytes of notices not punched, by reason (partial-block, "
                + "written-after-fence, written-while-pending, not-owned, fence-lost, unwatched).", skipped));
        List<GaugeDataPointSnapshot> failed = new ArrayList<>();
        for (String vm : s.failedVms().get()) {
            failed.add(point(1, Labels.of("vm", vm)));
        }
        out.add(gauge("vmfuse_vm_failed", "1 for each VM registered whose reclaimer could not start (vmfuse status "
                + "says why).", failed));
    }

    private void nbd(List<MetricSnapshot> out) {
        List<CounterDataPointSnapshot> requests = new ArrayList<>();
        List<CounterDataPointSnapshot> bytes = new ArrayList<>();
        List<HistogramDataPointSnapshot> latency = new ArrayList<>();
        List<GaugeDataPointSnapshot> clients = new ArrayList<>();
        List<GaugeDataPointSnapshot> queued = new ArrayList<>();
        List<GaugeDataPointSnapshot> weight = new ArrayList<>();
        List<GaugeDataPointSnapshot> reservation = new ArrayList<>();
        List<GaugeDataPointSnapshot> limit = new ArrayList<>();
        for (Scheduler.Stats st : s.scheduler().stats()) {
            Labels share = Labels.of("export", st.share());
            for (Scheduler.Kind k : Scheduler.Kind.values()) {
                Labels l = Labels.of("export", st.share(), "class", k.label());
                requests.add(count(st.requests()[k.ordinal()], l));
                bytes.add(count(st.bytes()[k.ordinal()], l));
                latency.add(histogram(st.latency()[k.ordinal()], st.latencyNanos()[k.ordinal()], l));
            }
            clients.add(point(st.users(), share));
            queued.add(point(st.queued(), share));
            weight.add(point(st.qos().weight(), share));
            reservation.add(point(st.qos().reservationIops(), share));
            limit.add(point(st.qos().limitIops(), share));
        }
        out.add(counter("vmfuse_nbd_requests", "NBD requests done, by export and class.", requests));
        out.add(counter("vmfuse_nbd_bytes", "Bytes NBD requests moved (read, written, trimmed or zeroed).", bytes));
        out.add(histograms("vmfuse_nbd_request_seconds", "NBD requests by how long they took, from their arrival "
                + "(their wait in the scheduler included) to the end of their work.", latency));
        out.add(gauge("vmfuse_nbd_clients", "NBD clients connected to an export.", clients));
        out.add(gauge("vmfuse_nbd_queued_requests", "NBD requests waiting in the scheduler.", queued));
        out.add(gauge("vmfuse_nbd_weight", "An export's scheduler weight.", weight));
        out.add(gauge("vmfuse_nbd_reservation_iops", "An export's reserved IOPS (0: none).", reservation));
        out.add(gauge("vmfuse_nbd_limit_iops", "An export's IOPS limit (0: none).", limit));
    }

    /**
     * A classic histogram, in seconds, from log2 counts of microseconds ({@code log2Micros[i]}:
     * 2^i to 2^(i+1) - 1 µs, so under the bound 2^(i+1) µs) and the sum of what they count.
     */
    static HistogramDataPointSnapshot histogram(long[] log2Micros, long sumNanos, Labels labels) {
        int n = LAST_BOUND_LOG2 - FIRST_BOUND_LOG2 + 2; // the bounds, then +Inf
        double[] bounds = new double[n];
        long[] counts = new long[n];
        for (int b = 0; b < n - 1; b++) {
            bounds[b] = (1L << (FIRST_BOUND_LOG2 + b)) / 1e6;
        }
        bounds[n - 1] = Double.POSITIVE_INFINITY;
        for (int i = 0; i < log2Micros.length; i++) {
            int bucket = Math.max(0, i + 1 - FIRST_BOUND_LOG2); // the first bound above 2^(i+1) - 1 µs
            counts[Math.min(n - 1, bucket)] += log2Micros[i];
        }
        return HistogramDataPointSnapshot.builder().classicHistogramBuckets(ClassicHistogramBuckets.of(bounds, counts))
                .sum(sumNanos / 1e9).labels(labels).build();
    }

    private static GaugeSnapshot gauge(String name, String help, List<GaugeDataPointSnapshot> points) {
        GaugeSnapshot.Builder b = GaugeSnapshot.builder().name(name).help(help);
        points.forEach(b::dataPoint);
        return b.build();
    }

    /** A counter; the exposition adds _total to {@code name}. */
    private static CounterSnapshot counter(String name, String help, List<CounterDataPointSnapshot> points) {
        CounterSnapshot.Builder b = CounterSnapshot.builder().name(name).help(help);
        points.forEach(b::dataPoint);
        return b.build();
    }

    private static HistogramSnapshot histograms(String name, String help, List<HistogramDataPointSnapshot> points) {
        HistogramSnapshot.Builder b = HistogramSnapshot.builder().name(name).help(help);
        points.forEach(b::dataPoint);
        return b.build();
    }

    private static GaugeDataPointSnapshot point(double value, Labels labels) {
        return GaugeDataPointSnapshot.builder().value(value).labels(labels).build();
    }

    private static CounterDataPointSnapshot count(double value, Labels labels) {
        return CounterDataPointSnapshot.builder().value(value).labels(labels).build();
    }
}
