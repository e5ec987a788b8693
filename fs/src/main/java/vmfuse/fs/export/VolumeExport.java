package vmfuse.fs.export;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

import com.kenai.jffi.MemoryIO;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import vmfuse.fs.FsException;
import vmfuse.fs.volume.Volume;
import vmfuse.nbd.Export;
import vmfuse.nbd.ExportException;

/**
 * An open {@link Volume} as an NBD export: the NBD door's calls become the same calls the FUSE
 * door makes, so a trim or a zero is punched, measured and counted, a write is counted by the
 * reclaimer's fence, a flush is the device's flush with its durability. The server's buffers
 * are direct: a read or write is one pread or pwrite on the image's descriptor.
 */
final class VolumeExport implements Export {
    private static final Logger log = LoggerFactory.getLogger(VolumeExport.class);
    private static final Runtime RUNTIME = Runtime.getSystemRuntime();

    private final Volume volume;
    private final WriterClaim claim;

    /** What must hold before a client changes the volume: for an image, that the mount does not write it. */
    @FunctionalInterface
    interface WriterClaim {
        void claim() throws FsException;
    }

    VolumeExport(Volume volume, WriterClaim claim) {
        this.volume = volume;
        this.claim = claim;
    }

    /** EBUSY (another door writes the image) goes to the client as EPERM, which the protocol has. */
    private static ExportException fail(FsException e) {
        return new ExportException(e.errno() == vmfuse.fs.nativeio.Native.EBUSY ? vmfuse.fs.nativeio.Native.EPERM
                : e.errno(), e.getMessage());
    }

    /** A pointer to {@code b}'s remaining bytes (a direct buffer: the server's). */
    private static Pointer at(ByteBuffer b) {
        if (!b.isDirect()) {
            throw new IllegalArgumentException("the NBD server's buffers are direct");
        }
        return Pointer.wrap(RUNTIME, MemoryIO.getInstance().getDirectBufferAddress(b) + b.position(), b.remaining());
    }

    @Override
    public long size() throws ExportException {
        try {
            return volume.size();
        } catch (FsException e) {
            throw fail(e);
        }
    }

    /** Every connection's writes land in the one image file or device: a flush anywhere covers them all. */
    @Override
    public boolean multiConn() {
        return true;
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws ExportException {
        try {
            int want = dst.remaining();
            int n = volume.read(at(dst), want, offset);
            if (n < want) { // the export shrank under the client: what is past the end reads as zeros
                for (int i = dst.position() + n; i < dst.limit(); i++) {
                    dst.put(i, (byte) 0);
                }
            }
            dst.position(dst.limit());
        } catch (FsException e) {
            throw fail(e);
        }
    }

    @Override
    public void write(long offset, ByteBuffer src) throws ExportException {
        try {
            claim.claim();
            int done = 0;
            int want = src.remaining();
            while (done < want) {
                ByteBuffer rest = src.slice(src.position() + done, want - done);
                done += volume.write(at(rest), want - done, offset + done);
            }
            src.position(src.limit());
        } catch (FsException e) {
            throw fail(e);
        }
    }

    @Override
    public void flush() throws ExportException {
        try {
            volume.sync(true);
        } catch (FsException e) {
            throw fail(e);
        }
    }

    @Override
    public void trim(long offset, long length) throws ExportException {
        try {
            claim.claim();
            volume.punch(offset, length);
        } catch (FsException e) {
            throw fail(e);
        }
    }

    @Override
    public void zero(long offset, long length, boolean noHole) throws ExportException {
        try {
            claim.claim();
            if (noHole) { // zeros that keep their space: nothing released, nothing counted
                volume.zeroKeepingSpace(offset, length);
            } else {
                volume.zero(offset, length, true);
            }
        } catch (FsException e) {
            throw fail(e);
        }
    }

    @Override
    public List<Export.Extent> extents(long offset, long length) throws ExportException {
        try {
            List<Export.Extent> out = new ArrayList<>();
            for (vmfuse.fs.volume.Extent e : volume.extents(offset, length)) {
                out.add(new Export.Extent(e.length(), !e.data()));
            }
            return out;
        } catch (FsException e) {
            throw fail(e);
        }
    }

    @Override
    public void close() {
        try {
            volume.close();
        } catch (FsException e) {
            // the descriptor is gone either way; the log says why its close failed
            log.warn("nbd close of {}: {}", volume.name(), e.getMessage());
        }
    }
}
