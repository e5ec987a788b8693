package vmfuse.fs.daemon;

import java.io.IOException;
import java.nio.file.FileStore;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import vmfuse.fs.FsException;
import vmfuse.fs.Node;
import vmfuse.fs.control.Answer;
import vmfuse.fs.control.Request;
import vmfuse.fs.export.ExportRegistry;
import vmfuse.fs.export.VolumeExports;
import vmfuse.fs.images.ImagesDir;
import vmfuse.fs.mount.VmFuseFs;
import vmfuse.fs.nativeio.Native;
import vmfuse.fs.nativeio.StructStat;
import vmfuse.fs.space.ReleaseLedger;
import vmfuse.journal.ByteSize;
import vmfuse.journal.Durability;
import vmfuse.journal.JournalDevice;
import vmfuse.journal.JournalStore;
import vmfuse.journal.StoreException;
import vmfuse.nbd.Scheduler;
import vmfuse.reclaimer.AgentAccess;
import vmfuse.reclaimer.VmReclaimer;

/** The daemon's end of the control protocol ({@link Request}, {@link Answer}): a request line in, answer text out. */
final class ControlHandler {
    private final StoreDir store;
    private final Path mnt;
    private final long pid;
    private final ImagesDir backing;
    private final ReleaseLedger ledger;
    private final VmFuseFs fs;
    private final JournalStore journals;
    private final VmRegistry vms;
    private final ExportRegistry exports;
    private final VolumeExports volumes;
    private final Scheduler scheduler;

    ControlHandler(StoreDir store, Path mnt, long pid, ImagesDir backing, ReleaseLedger ledger, VmFuseFs fs,
            JournalStore journals, VmRegistry vms, ExportRegistry exports, VolumeExports volumes, Scheduler scheduler) {
        this.exports = exports;
        this.volumes = volumes;
        this.scheduler = scheduler;
        this.store = store;
        this.mnt = mnt;
        this.pid = pid;
        this.backing = backing;
        this.ledger = ledger;
        this.fs = fs;
        this.journals = journals;
        this.vms = vms;
    }

    /** The answer to {@code line}: its lines, or "error ERRNO REASON". */
    String answer(String line) {
        try {
            return Answer.encode(answer(Request.decode(line)));
        } catch (FsException e) {
            return Answer.error(e) + "\n";
        }
    }

    private List<? extends Answer> answer(Request request) throws FsException {
        try {
            if (request instanceof Request.Status) {
                List<Answer> out = new ArrayList<>(status());
                out.addAll(vms.status());
                out.addAll(nbdStatus());
                return out;
            }
            if (request instanceof Request.Journals) {
                return journals();
            }
            if (request instanceof Request.JournalCheckpoint) {
                fs.checkpointJournals();
                return List.of(journalStore());
            }
            if (request instanceof Request.JournalReopen) {
                int lost = journals.reopen();
                return List.of(new Answer.JournalReopened(lost), journalStore());
            }
            if (request instanceof Request.JournalCreate r) {
                journalCreate(r);
                return List.of(new Answer.Ok());
            }
            if (request instanceof Request.VmAdd r) {
                vms.add(r.name(), r.image(), Path.of(r.agentSocket()), r.qmpSocket() == null ? null : Path.of(r.qmpSocket()),
                        r.access() == null ? AgentAccess.ROOT : AgentAccess.parse(r.access()));
                return List.of(new Answer.Ok());
            }
            if (request instanceof Request.VmRemove r) {
                vms.remove(r.name());
                return List.of(new Answer.Ok());
            }
            if (request instanceof Request.VmReclaim r) {
                VmReclaimer.Stats before = vms.stats(r.name());
                VmReclaimer.Stats after = vms.reclaimNow(r.name());
                return List.of(new Answer.Reclaimed(after.bytesPunched() - before.bytesPunched(),
                        after.bytesFreed() - before.bytesFreed(), after.bytesPending(), after.dropped() - before.dropped()));
            }
            if (request instanceof Request.ExportAdd r) {
                for (String v : r.volumes()) {
                    volumes.checkExists(v);
                }
                exports.add(new ExportRegistry.Grant(r.name(), r.uid() == null ? -1 : r.uid(), r.pskIdentity(),
                        new Scheduler.Qos(r.weight(), r.reservationIops(), r.limitIops()), r.volumes()));
                return List.of(new Answer.Ok());
            }
            if (request instanceof Request.ExportSet r) {
                ExportRegistry.Grant g = exports.get(r.name());
                if (g == null) {
                    throw new FsException(Native.ENOENT, "no export " + r.name());
                }
                Scheduler.Qos q = g.qos();
                g = exports.set(r.name(), new Scheduler.Qos(r.weight() == null ? q.weight() : r.weight(),
                        r.reservationIops() == null ? q.reservationIops() : r.reservationIops(),
                        r.limitIops() == null ? q.limitIops() : r.limitIops()));
                return List.of(export(g));
            }
            if (request instanceof Request.ExportRemove r) {
                exports.remove(r.name());
                return List.of(new Answer.Ok());
            }
            throw new IllegalStateException("no answer for " + request);
        } catch (IOException e) {
            throw new FsException(Native.EIO, e.getMessage());
        } catch (StoreException e) {
            throw new FsException(e.errno(), e.getMessage());
        } catch (IllegalArgumentException e) { // a user or group unknown, a size or durability not understood
            throw new FsException(Native.EINVAL, e.getMessage());
        }
    }

    private static Answer.Export export(ExportRegistry.Grant g) {
        return new Answer.Export(g.name(), g.uid(), g.pskIdentity(), g.qos().weight(), g.qos().reservationIops(),
                g.qos().limitIops(), g.volumes());
    }

    /** The NBD door: its exports, then every share of the scheduler with what it was served. */
    private List<Answer> nbdStatus() {
        List<Answer> out = new ArrayList<>();
        exports.grants().forEach(g -> out.add(export(g)));
        for (Scheduler.Stats st : scheduler.stats()) {
            long[] r = st.requests();
            long[] b = st.bytes();
            out.add(new Answer.NbdShare(st.share(), st.qos().weight(), st.qos().reservationIops(),
                    st.qos().limitIops(), st.users(), st.queued(), r[Scheduler.Kind.READ.ordinal()],
                    r[Scheduler.Kind.WRITE.ordinal()], r[Scheduler.Kind.FLUSH.ordinal()],
                    r[Scheduler.Kind.TRIM.ordinal()], b[Scheduler.Kind.READ.ordinal()],
                    b[Scheduler.Kind.WRITE.ordinal()] + b[Scheduler.Kind.FLUSH.ordinal()], st.p50Micros(),
                    st.p99Micros()));
        }
        return out;
    }

    private void journalCreate(Request.JournalCreate r) throws FsException, StoreException {
        Node.checkTypedName(r.name());
        journals.create(r.name(), ByteSize.parse(r.size()), Durability.parse(r.durability()));
    }

    private List<Answer> journals() {
        List<Answer> out = new ArrayList<>();
        for (JournalDevice d : journals.list()) {
            if (!d.name().startsWith(Node.HIDDEN_PREFIX)) {
                out.add(new Answer.Journal(d.name(), d.size(), d.bytesStored(), d.memoryUsed(), d.durability().label(),
                        d.lastFlush()));
            }
        }
        out.add(journalStore());
        return out;
    }

    private Answer.JournalStore journalStore() {
        return new Answer.JournalStore(journals.memoryHeld(), journals.memoryLimit(), journals.bytesOnDisk(),
                journals.checkpoints(), journals.memoryAllocated(), journals.reopens(), journals.brokenReason());
    }

    private List<Answer> status() throws FsException, IOException {
        List<Answer> out = new ArrayList<>();
        out.add(new Answer.Mount(mnt.toString(), pid, store.dir().toString()));
        FileStore space = Files.getFileStore(store.images());
        out.add(new Answer.StoreSpace(space.getTotalSpace(), space.getUsableSpace()));
        Map<String, Integer> openCounts = fs.openCounts();
        long size = 0;
        long allocated = 0;
        Map<String, StructStat.Usage> images = backing.usages();
        for (Map.Entry<String, StructStat.Usage> e : images.entrySet()) {
            String name = e.getKey();
            StructStat.Usage u = e.getValue();
            ReleaseLedger.Count c = ledger.of(ReleaseLedger.image(name));
            out.add(new Answer.Image(name, u.size(), u.allocated(), c.bytes(), c.events(), openCounts.getOrDefault(name, 0)));
            size += u.size();
            allocated += u.allocated();
        }
        ReleaseLedger.Count t = ledger.total();
        out.add(new Answer.Total(images.size(), size, allocated, t.bytes(), t.events()));
        return out;
    }
}
