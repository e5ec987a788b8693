package vmfuse.fs.nativeio;

import java.util.concurrent.atomic.AtomicReference;

/** The calling thread's own nice value: setpriority(2) on its thread id, which Linux keeps per thread. */
public final class ThreadNice {
    private ThreadNice() {}

    private static final int PRIO_PROCESS = 0;

    /** Sets the calling thread's nice value; false if refused (raising it back needs CAP_SYS_NICE or RLIMIT_NICE). */
    public static boolean set(int nice) {
        return LibC.INSTANCE.setpriority(PRIO_PROCESS, LibC.INSTANCE.gettid(), nice) == 0;
    }

    /**
     * Whether a thread of this process can go to {@code nice} and back to 0: a thread of its own
     * tries, so that no thread that stays is left changed. Null if it can, else why not.
     */
    public static String check(int nice) {
        AtomicReference<String> why = new AtomicReference<>("the check did not run");
        Thread t = new Thread(() -> {
            if (!set(nice)) {
                why.set("setpriority to nice " + nice + ": " + Native.strerror(Native.errno()));
            } else if (!set(0)) {
                why.set("setpriority back to nice 0: " + Native.strerror(Native.errno())
                        + " (it needs CAP_SYS_NICE or an RLIMIT_NICE of 20)");
            } else {
                why.set(null);
            }
        }, "nice-check");
        t.start();
        try {
            t.join(10_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return "interrupted";
        }
        return why.get();
    }
}
