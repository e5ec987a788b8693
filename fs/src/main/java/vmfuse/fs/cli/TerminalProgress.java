package vmfuse.fs.cli;

import java.io.PrintStream;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.FutureTask;

import vmfuse.fs.nativeio.LibC;

/**
 * One line of progress on stderr, rewritten in place, only when stderr is a terminal: in a pipe,
 * a file or a log (a CI job, the daemon's log) nothing is written, so what scripts read is never
 * interleaved with it. Closing it ends the line.
 */
final class TerminalProgress implements AutoCloseable {
    private final PrintStream err;
    private final boolean on;
    private boolean shown;

    TerminalProgress() {
        this(System.err, LibC.INSTANCE.isatty(2) == 1);
    }

    TerminalProgress(PrintStream err, boolean terminal) {
        this.err = err;
        this.on = terminal;
    }

    /** Whether anything is shown: stderr is a terminal. */
    boolean on() {
        return on;
    }

    void show(String line) {
        if (on) {
            err.print("\r\033[K" + line);
            err.flush();
            shown = true;
        }
    }

    /**
     * Runs {@code work} (a request to the daemon) in a thread of its own and calls {@code tick}
     * every 250 ms while it runs, so that tick can show how far it got (asking the daemon on
     * another connection); returns what work returned, or throws what it threw.
     */
    static <T> T during(Callable<T> work, Runnable tick) throws Exception {
        FutureTask<T> run = new FutureTask<>(work);
        Thread t = new Thread(run, "vmfuse-request");
        t.setDaemon(true);
        t.start();
        while (!run.isDone()) {
            tick.run();
            t.join(250);
        }
        try {
            return run.get();
        } catch (ExecutionException e) {
            throw e.getCause() instanceof Exception x ? x : e;
        }
    }

    /** "12.5 of 48.0 MiB". */
    static String mib(long done, long total) {
        return String.format(Locale.ROOT, "%.1f of %.1f MiB", done / 1048576.0, total / 1048576.0);
    }

    @Override
    public void close() {
        if (shown) {
            err.println();
            err.flush();
        }
    }
}
