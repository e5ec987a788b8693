package vmfuse.reclaimer;

import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** Runs qemu-img, qemu-io and friends for tests: with a timeout, killed by pid past it. */
final class Tools {
    private Tools() {}

    record Result(int exit, String out, String err) {
        boolean ok() {
            return exit == 0;
        }
    }

    static Result run(String... cmd) throws IOException, InterruptedException {
        Path out = Files.createTempFile("tools", ".out");
        Path err = Files.createTempFile("tools", ".err");
        try {
            Process p = new ProcessBuilder(List.of(cmd)).redirectOutput(out.toFile()).redirectError(err.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null"))).start();
            if (!p.waitFor(120, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                p.waitFor(10, TimeUnit.SECONDS);
                fail("timed out after 120 s: " + String.join(" ", cmd));
            }
            return new Result(p.exitValue(), Files.readString(out, StandardCharsets.UTF_8),
                    Files.readString(err, StandardCharsets.UTF_8));
        } finally {
            Files.deleteIfExists(out);
            Files.deleteIfExists(err);
        }
    }

    /** Runs and fails the test unless the command exits 0; returns its stdout. */
    static String ok(String... cmd) throws IOException, InterruptedException {
        Result r = run(cmd);
        if (!r.ok()) {
            fail(String.join(" ", cmd) + " exited " + r.exit() + "\n" + r.out() + r.err());
        }
        return r.out();
    }

    /** qemu-io commands on a qcow2 image, e.g. "write -P 0x41 0 64k". */
    static void qemuIo(Path image, String... commands) throws IOException, InterruptedException {
        String[] cmd = new String[4 + 2 * commands.length];
        cmd[0] = "qemu-io";
        cmd[1] = "-f";
        cmd[2] = "qcow2";
        for (int i = 0; i < commands.length; i++) {
            cmd[3 + 2 * i] = "-c";
            cmd[4 + 2 * i] = commands[i];
        }
        cmd[cmd.length - 1] = image.toString();
        String out = ok(cmd);
        if (out.contains("Pattern verification failed") || out.contains("error") || out.contains("failed")) {
            fail(String.join(" ", cmd) + ":\n" + out);
        }
    }

    /** Bytes the file takes on disk. */
    static long allocated(Path file) throws IOException, InterruptedException {
        return Long.parseLong(ok("stat", "-c", "%b", file.toString()).trim()) * 512;
    }
}
