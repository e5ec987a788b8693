package vmfuse.fs.mount;

import static vmfuse.fs.nativeio.Native.EINTR;

import java.util.List;
import java.util.function.BooleanSupplier;

import jnr.ffi.LibraryLoader;
import jnr.ffi.Memory;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import jnr.ffi.annotations.Delegate;
import jnr.ffi.byref.PointerByReference;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * libfuse 2's request loop, driven by a fixed pool of Java threads.
 *
 * <p>Why not fuse_main's multithreaded loop: its worker threads are native, and jffi attaches a
 * native thread to the JVM for each callback and detaches it afterwards (for the first 1000
 * callbacks of every thread); each attach creates a java.lang.Thread and its garbage. Measured
 * on a punch-hole loop: a new Java thread per request, young GCs every ~100 requests, p99 of
 * 1-2 ms. Here the threads that read /dev/fuse are Java threads from the start, so a callback
 * is a plain upcall. The loop is the one libfuse's own fuse_loop_mt runs (fuse_chan_recv, then
 * fuse_session_process), with fuse_setup/fuse_teardown around it for mount and unmount. The
 * threads are {@link FuseWorkers}: a request that waits on another subsystem never takes the
 * last thread that serves the others.
 */
final class FuseLoop {
    private static final Logger log = LoggerFactory.getLogger(FuseLoop.class);
    /** How long spares stay after the last time one was needed. */
    private static final java.time.Duration SPARE_LINGER = java.time.Duration.ofSeconds(2);

    /** The libfuse 2.6+ session API (fuse.h, fuse_lowlevel.h). */
    public interface Lib {
        Pointer fuse_setup(int argc, String[] argv, Pointer op, long opSize, PointerByReference mountpoint,
                Pointer multithreaded, Pointer userData);

        void fuse_teardown(Pointer fuse, Pointer mountpoint);

        Pointer fuse_get_session(Pointer fuse);

        Pointer fuse_session_next_chan(Pointer se, Pointer ch);

        long fuse_chan_bufsize(Pointer ch);

        /** {@code ch} points to a struct fuse_chan * (libfuse may replace it). */
        int fuse_chan_recv(Pointer ch, Pointer buf, long size);

        void fuse_session_process(Pointer se, Pointer buf, long len, Pointer ch);

        int fuse_session_exited(Pointer se);
    }

    private static final Lib LIB = LibraryLoader.create(Lib.class).failImmediately().load("libfuse.so.2");

    private FuseLoop() {}

    /**
     * libfuse 2's fsyncdir is {@code int (*)(const char *, int datasync, struct fuse_file_info *)};
     * jnr-fuse 0.5.8 binds it without the int, so the callback took datasync (0 or 1) for the
     * fuse_file_info pointer and answered without calling fsyncdir at all. This binding, put in
     * its slot of struct fuse_operations (the 29th callback) by {@link #mount}, has the real
     * signature.
     */
    public interface FsyncdirCallback {
        @Delegate
        int fsyncdir(String path, int datasync, Pointer fi);
    }

    private static final int FSYNCDIR_SLOT = 28;
    private static final int FUSE_OPERATIONS_SIZE = 360;

    /**
     * Mounts {@code mountPoint} with jnr-fuse's struct fuse_operations at {@code ops}, patched
     * first, and serves it on {@code threads} threads (and up to three spares each while requests
     * wait on journal memory or held images) until the mount goes away; returns 0, or 1 if
     * libfuse could not mount. Calls libfuse directly rather than jnr-fuse's mount(), which adds
     * a shutdown hook that lazily unmounts (the daemon owns the mount's lifecycle) and serves
     * requests on native threads. {@code fsyncdir} must stay reachable while the mount lives.
     */
    static int mount(Pointer ops, long opSize, FsyncdirCallback fsyncdir, String mountPoint, List<String> options,
            int threads) {
        // the bit field after the 38 classic callbacks (8 bytes each): flag_nullpath_ok (bit 0)
        // and flag_nopath (bit 1): operations on an open file or directory (read, write, flush,
        // fsync, release, ftruncate, fgetattr, readdir) arrive without a path, which libfuse then
        // need not build and jnr need not decode: VmFuseFs uses fi->fh only. flag_utime_omit_ok
        // (bit 2): UTIME_NOW/UTIME_OMIT reach utimens unchanged.
        if (opSize != FUSE_OPERATIONS_SIZE) {
            throw new IllegalStateException("unexpected struct fuse_operations size " + opSize);
        }
        ops.putInt(38 * 8, 0b111);
        ops.putAddress(FSYNCDIR_SLOT * 8, Runtime.getSystemRuntime().getClosureManager()
                .getClosurePointer(FsyncdirCallback.class, fsyncdir).address());
        String[] args = new String[3 + 2 * options.size()];
        args[0] = "vmfuse";
        args[1] = "-f";
        args[2] = mountPoint;
        for (int i = 0; i < options.size(); i++) {
            args[3 + 2 * i] = "-o";
            args[4 + 2 * i] = options.get(i);
        }
        return run(args, ops, opSize, threads, 4 * threads);
    }

    /**
     * Mounts with {@code argv} (as fuse_main would take it: program name, -f, mount point, -o
     * options), serves requests on {@code threads} threads, half of them kept free while others
     * wait on other subsystems (with spares, up to {@code maxThreads}; see {@link FuseWorkers}),
     * until the mount goes away, then tears down. Returns 0, or 1 if libfuse could not mount
     * (its reason is on stderr).
     */
    private static int run(String[] argv, Pointer operations, long opSize, int threads, int maxThreads) {
        Runtime rt = Runtime.getSystemRuntime();
        PointerByReference mountpoint = new PointerByReference();
        Pointer multithreaded = Memory.allocate(rt, 4);
        Pointer fuse = LIB.fuse_setup(argv.length, argv, operations, opSize, mountpoint, multithreaded, null);
        if (fuse == null) {
            return 1;
        }
        Pointer se = LIB.fuse_get_session(fuse);
        Pointer ch = LIB.fuse_session_next_chan(se, null);
        long bufsize = LIB.fuse_chan_bufsize(ch);
        FuseWorkers workers = new FuseWorkers(threads, Math.max(1, threads / 2), maxThreads, SPARE_LINGER, "fuse", () -> server(se, ch, bufsize));
        workers.start();
        try {
            workers.awaitEnd();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        LIB.fuse_teardown(fuse, mountpoint.getValue());
        return 0;
    }

    /** One thread's server: reads a request from /dev/fuse and processes it; false once the session ends. */
    private static BooleanSupplier server(Pointer se, Pointer ch, long bufsize) {
        Pointer buf = Memory.allocateDirect(Runtime.getSystemRuntime(), (int) bufsize);
        Pointer chp = Memory.allocateDirect(Runtime.getSystemRuntime(), 8);
        return () -> {
            while (LIB.fuse_session_exited(se) == 0) {
                chp.putPointer(0, ch);
                int res = LIB.fuse_chan_recv(chp, buf, bufsize);
                if (res == -EINTR) {
                    continue;
                }
                if (res <= 0) {
                    if (res < 0) {
                        log.warn("reading /dev/fuse failed: errno={}", -res);
                    }
                    return false; // 0: the mount went away (ENODEV) or the session was ended
                }
                LIB.fuse_session_process(se, buf, res, chp.getPointer(0));
                return true;
            }
            return false;
        };
    }
}
