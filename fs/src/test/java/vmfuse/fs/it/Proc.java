package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.fail;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * External processes for tests: every one has a timeout and is killed by its pid (with its
 * descendants) when the timeout expires or the test is done with it.
 */
final class Proc {
    static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(120);

    record Result(List<String> cmd, int exit, String out, String err) {
        boolean ok() {
            return exit == 0;
        }

        Result assertOk() {
            if (exit != 0) {
                fail(describe());
            }
            return this;
        }

        String describe() {
            return String.join(" ", cmd) + " exited " + exit + "\n--- stdout\n" + tail(out) + "\n--- stderr\n" + tail(err);
        }
    }

    private Proc() {}

    static Result run(String... cmd) {
        return run(DEFAULT_TIMEOUT, Arrays.asList(cmd));
    }

    static Result run(Duration timeout, String... cmd) {
        return run(timeout, Arrays.asList(cmd));
    }

    static Result ok(String... cmd) {
        return run(cmd).assertOk();
    }

    static Result run(Duration timeout, List<String> cmd) {
        Path out = null;
        Path err = null;
        try {
            out = Files.createTempFile("proc", ".out");
            err = Files.createTempFile("proc", ".err");
            Process p = new ProcessBuilder(cmd)
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                    .redirectOutput(out.toFile()).redirectError(err.toFile()).start();
            if (!p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
                kill(p.toHandle());
                fail(String.join(" ", cmd) + " timed out after " + timeout + "\n--- stdout\n"
                        + tail(Files.readString(out)) + "\n--- stderr\n" + tail(Files.readString(err)));
            }
            return new Result(cmd, p.exitValue(), Files.readString(out, StandardCharsets.UTF_8),
                    Files.readString(err, StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new AssertionError("cannot run " + cmd + ": " + e, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted running " + cmd);
        } finally {
            deleteQuietly(out);
            deleteQuietly(err);
        }
    }

    /** A process left running in the background (a QEMU holding an image, a shell holding a file). */
    static final class Background implements AutoCloseable {
        final Process process;
        final Path log;

        Background(Process process, Path log) {
            this.process = process;
            this.log = log;
        }

        String output() {
            try {
                return Files.readString(log);
            } catch (IOException e) {
                return "(no output: " + e + ")";
            }
        }

        @Override
        public void close() {
            kill(process.toHandle());
            deleteQuietly(log);
        }
    }

    static Background start(String... cmd) {
        try {
            Path log = Files.createTempFile("proc", ".log");
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null"))).start();
            return new Background(p, log);
        } catch (IOException e) {
            throw new AssertionError("cannot start " + Arrays.toString(cmd) + ": " + e, e);
        }
    }

    /** SIGKILL to the process and its descendants, then wait (bounded) for it to be gone. */
    static void kill(ProcessHandle h) {
        h.descendants().forEach(ProcessHandle::destroyForcibly);
        h.destroyForcibly();
        try {
            h.onExit().get(30, TimeUnit.SECONDS);
        } catch (Exception e) {
            throw new AssertionError("process " + h.pid() + " survived SIGKILL", e);
        }
    }

    static String tail(String s) {
        return s.length() <= 4000 ? s : "..." + s.substring(s.length() - 4000);
    }

    private static void deleteQuietly(Path p) {
        if (p != null) {
            try {
                Files.deleteIfExists(p);
            } catch (IOException e) {
                // a temp file; nothing depends on it
            }
        }
    }
}
