package vmfuse.reclaimer;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** Runs a QEMU tool (qemu-img, qemu-nbd): with a timeout, killed by its pid past it. */
final class Tool {
    private Tool() {}

    /** Runs {@code cmd} to its end within {@code seconds}; its output, or an IOException that quotes it. */
    static String run(long seconds, String... cmd) throws IOException {
        Path log = Files.createTempFile("vmfuse-tool", ".out");
        Process p = start(log, cmd);
        try {
            if (!p.waitFor(seconds, TimeUnit.SECONDS)) {
                throw new IOException(String.join(" ", cmd) + ": no exit within " + seconds + " s");
            }
            String out = Files.readString(log, StandardCharsets.UTF_8);
            if (p.exitValue() != 0) {
                throw new IOException(String.join(" ", cmd) + " exited " + p.exitValue() + ": " + out.strip());
            }
            return out;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted: " + String.join(" ", cmd), e);
        } finally {
            stop(p);
            Files.deleteIfExists(log);
        }
    }

    /** Starts {@code cmd}, its output (stdout and stderr) to {@code log}. */
    static Process start(Path log, String... cmd) throws IOException {
        return new ProcessBuilder(List.of(cmd)).redirectErrorStream(true).redirectOutput(log.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null"))).start();
    }

    /** Ends {@code p}: SIGTERM, then SIGKILL if it is still there after 10 s. */
    static void stop(Process p) {
        if (!p.isAlive()) {
            return;
        }
        p.destroy();
        try {
            if (!p.waitFor(10, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                p.waitFor(10, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            p.destroyForcibly();
            Thread.currentThread().interrupt();
        }
    }

    /** The last lines of a log file, for an error message. */
    static String tail(Path log) {
        try {
            List<String> lines = Files.readAllLines(log, StandardCharsets.UTF_8);
            return String.join(" | ", lines.subList(Math.max(0, lines.size() - 5), lines.size()));
        } catch (IOException e) {
            return "";
        }
    }
}
