package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The test guest (test-images/build-guest.sh) booted under QEMU with -accel tcg: its disks are
 * files in a vmfuse mount, a script runs at boot (from a small script disk, the last one), and
 * the serial console is captured to a file. Every boot has a timeout; past it QEMU is killed by
 * its pid and the test fails with the console's tail.
 */
final class Guest {
    static final Path BUILD = Mounted.REPO.resolve("test-images/build");

    private Guest() {}

    /** Builds the guest if its inputs changed (cached otherwise). */
    static void build() {
        Proc.run(Duration.ofSeconds(300), Mounted.REPO.resolve("test-images/build-guest.sh").toString()).assertOk();
    }

    /** A booted guest: its QEMU process and its console file. */
    record Running(Process qemu, Path consoleFile, Path scriptDisk) implements AutoCloseable {
        String console() {
            try {
                return Files.readString(consoleFile, StandardCharsets.UTF_8);
            } catch (IOException e) {
                return "(no console: " + e + ")";
            }
        }

        /** kill -9 of QEMU, as a host would see a VM crash. */
        @Override
        public void close() throws IOException {
            Proc.kill(qemu.toHandle());
            Files.deleteIfExists(scriptDisk);
        }
    }

    /** Boots with {@code drives} (QEMU -drive specs: /dev/vda, /dev/vdb...) and {@code script} to run; returns at once. */
    static Running start(Path work, String script, String... drives) throws IOException {
        return start(work, script, List.of(), drives);
    }

    /** As {@link #start(Path, String, String...)}, with more QEMU arguments (devices, chardevs) before the drives. */
    static Running start(Path work, String script, List<String> qemuArgs, String... drives) throws IOException {
        Path scriptDisk = Files.createTempFile(work, "script", ".img");
        Files.writeString(scriptDisk, "#vmfuse-script\n" + script + "\n", StandardCharsets.UTF_8);
        Proc.ok("truncate", "-s", "64k", scriptDisk.toString());
        Path console = Files.createTempFile(work, "console", ".log");
        List<String> cmd = new ArrayList<>(List.of("qemu-system-x86_64", "-accel", "tcg", "-m", "384", "-smp", "1",
                "-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
                "-serial", "file:" + console,
                "-kernel", BUILD.resolve("vmlinuz").toString(), "-initrd", BUILD.resolve("initramfs.gz").toString(),
                "-append", "console=ttyS0 quiet panic=-1"));
        cmd.addAll(qemuArgs);
        for (String d : drives) {
            cmd.add("-drive");
            cmd.add(d);
        }
        cmd.add("-drive");
        cmd.add("file=" + scriptDisk + ",format=raw,if=virtio,readonly=on");
        Process qemu = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(work.resolve("qemu.out").toFile()).start();
        return new Running(qemu, console, scriptDisk);
    }

    /**
     * Boots, runs {@code script} (POSIX sh, run with -e), and returns the console. Fails unless
     * the script exits 0 within {@code timeout}.
     */
    static String run(Path work, String script, Duration timeout, String... drives) throws IOException {
        try (Running g = start(work, script, drives)) {
            boolean exited;
            try {
                exited = g.qemu().waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                exited = false;
            }
            String out = g.console();
            if (!exited) {
                fail("guest did not finish within " + timeout + "; console:\n" + Proc.tail(out));
            }
            if (!out.contains("vmfuse-guest: exit 0")) {
                fail("guest script failed (QEMU exit " + g.qemu().exitValue() + "); console:\n" + Proc.tail(out)
                        + "\nqemu: " + Files.readString(work.resolve("qemu.out")));
            }
            return out;
        }
    }

    /** A virtio drive spec for a file. */
    static String drive(Path file, String format, String extra) {
        return "file=" + file + ",format=" + format + ",if=virtio" + (extra.isEmpty() ? "" : "," + extra);
    }
}
