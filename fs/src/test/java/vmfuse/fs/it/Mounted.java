package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Optional;
import java.util.stream.Stream;

/**
 * A real vmfuse mount for a test, started with bin/vmfuse as an operator would: a fresh store and
 * mount point under /tmp, mounted in the background; close() unmounts with vmfuse umount, and if
 * that fails, detaches the mount and kills the daemon by its pid, so no test leaves a mount behind.
 */
final class Mounted implements AutoCloseable {
    static final Path REPO = Path.of(System.getProperty("vmfuse.repo", "..")).toAbsolutePath().normalize();
    static final Path VMFUSE = REPO.resolve("bin/vmfuse");

    final Path root;
    final Path store;
    final Path mnt;
    private final List<Path> tmpfsMounts = new ArrayList<>();
    boolean mounted; // set by a test that mounts by hand (with its own JAVA_OPTS), so that close unmounts

    private Mounted(Path root, Path store, Path mnt) {
        this.root = root;
        this.store = store;
        this.mnt = mnt;
    }

    /** A temporary root with empty store/ and mnt/, not yet mounted. */
    static Mounted prepare() throws IOException {
        Path root = Files.createTempDirectory(Path.of("/tmp"), "vmfuse-it-");
        Mounted m = new Mounted(root, root.resolve("store"), root.resolve("mnt"));
        Files.createDirectories(m.store);
        Files.createDirectories(m.mnt);
        return m;
    }

    /** A mounted fresh store. */
    static Mounted create() throws IOException {
        Mounted m = prepare();
        m.mount();
        return m;
    }

    /** A mounted store on its own tmpfs of {@code size}: free space and ENOSPC are exact there. */
    static Mounted onTmpfs(String size, String... mountArgs) throws IOException {
        Mounted m = prepare();
        Disk.tmpfs(m.store, size);
        m.tmpfsMounts.add(m.store);
        m.mount(mountArgs);
        return m;
    }

    void mount(String... extra) {
        List<String> cmd = new ArrayList<>(List.of("mount", "--store", store.toString()));
        cmd.addAll(List.of(extra));
        cmd.add(mnt.toString());
        vmfuse(cmd.toArray(String[]::new)).assertOk();
        mounted = true;
    }

    /**
     * Mounts with a test-only system property of the daemon ({@code -Dvmfuse.test.NAME=VALUE}), on
     * top of bin/vmfuse's own JVM options.
     */
    void mountWithProperty(String property, String... extra) {
        List<String> cmd = new ArrayList<>(List.of("env", "JAVA_OPTS=-Xms64m -Xmx512m -XX:+UseSerialGC -D" + property,
                VMFUSE.toString(), "mount", "--store", store.toString()));
        cmd.addAll(List.of(extra));
        cmd.add(mnt.toString());
        Proc.run(Duration.ofSeconds(90), cmd).assertOk();
        mounted = true;
    }

    Proc.Result vmfuse(String... args) {
        List<String> cmd = new ArrayList<>();
        cmd.add(VMFUSE.toString());
        cmd.addAll(List.of(args));
        return Proc.run(Duration.ofSeconds(90), cmd);
    }

    Proc.Result umount() {
        Proc.Result r = vmfuse("umount", mnt.toString());
        if (r.ok()) {
            mounted = false;
        }
        return r;
    }

    /** Path of an image as QEMU sees it, in the mount. */
    Path image(String name) {
        return mnt.resolve("images").resolve(name);
    }

    /** Path of an image's backing file in the store. */
    Path backing(String name) {
        return store.resolve("images").resolve(name);
    }

    Optional<Long> daemonPid() {
        try {
            String s = Files.readString(store.resolve("vmfuse.pid")).trim();
            return Optional.of(Long.parseLong(s.split("\t")[0]));
        } catch (IOException | RuntimeException e) {
            return Optional.empty();
        }
    }

    /**
     * Waits (Poll's default time) until the daemon's log holds {@code text}: its lines reach the
     * file a little after they are logged (BatchingStderrAppender), so a test reading it right
     * after an action may not find them yet.
     */
    void awaitLog(String text) {
        Poll.until(() -> log().contains(text), () -> "the daemon's log never said '" + text + "':\n" + log());
    }

    String log() {
        try {
            return Files.readString(store.resolve("vmfuse.log"));
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }

    @Override
    public void close() throws IOException {
        Optional<Long> pid = daemonPid();
        if (mounted && !umount().ok()) {
            Proc.run("fusermount", "-u", "-z", mnt.toString());
            pid.flatMap(ProcessHandle::of).ifPresent(Proc::kill);
        }
        Proc.run("fusermount", "-u", "-z", mnt.toString()); // a stale mount a test left on purpose
        for (Path t : tmpfsMounts) {
            Disk.umount(t);
        }
        assertTrue(Proc.run("mountpoint", "-q", mnt.toString()).exit() != 0, "still mounted: " + mnt);
        try (Stream<Path> all = Files.walk(root)) {
            for (Path p : all.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
