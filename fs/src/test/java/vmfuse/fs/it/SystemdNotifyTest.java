package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * vmfuse@.service is Type=notify: the daemon tells systemd READY=1 once the mount is live, and
 * STOPPING=1 when it goes, through $NOTIFY_SOCKET (a path, or an abstract name), as sd_notify(3)
 * does. A listener stands in for systemd and records, with each message, whether the mount was
 * there when it came.
 */
@Tag("integration")
class SystemdNotifyTest {
    /** Receives datagrams on argv[1] ('@' for the abstract namespace) until STOPPING=1; one line each. */
    private static final String LISTENER = """
            import os, socket, sys
            name, mnt, out = sys.argv[1], sys.argv[2], sys.argv[3]
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.bind('\\0' + name[1:] if name.startswith('@') else name)
            open(out + '.ready', 'w').close()
            s.settimeout(120)
            while True:
                msg = s.recv(4096).decode()
                with open(out, 'a') as f:
                    f.write('mounted=%s %s\\n' % (os.path.ismount(mnt), msg.replace('\\n', '|')))
                if 'STOPPING=1' in msg:
                    break
            """;

    @Test
    void readyOnceMountedAndStoppingAtTheUnmountOnAPathOrAnAbstractSocket() throws Exception {
        try (Mounted m = Mounted.prepare()) {
            Path dir = m.store.getParent();
            notifies(m, dir.resolve("notify.sock").toString(), dir.resolve("path.out"));
            notifies(m, "@vmfuse-test-" + ProcessHandle.current().pid(), dir.resolve("abstract.out"));
        }
    }

    private static boolean says(Path out, String what) {
        try {
            return Files.exists(out) && Files.readString(out).contains(what);
        } catch (java.io.IOException e) {
            return false;
        }
    }

    private static void notifies(Mounted m, String socket, Path out) throws Exception {
        try (Proc.Background listener = Proc.start("python3", "-c", LISTENER, socket, m.mnt.toString(), out.toString())) {
            Poll.until(() -> Files.exists(Path.of(out + ".ready")), listener::output);
            try (Proc.Background daemon = Proc.start("env", "NOTIFY_SOCKET=" + socket, Mounted.VMFUSE.toString(), "mount",
                    "--foreground", "--store", m.store.toString(), m.mnt.toString())) {
                Poll.until(() -> says(out, "READY=1"), daemon::output);
                String ready = Files.readString(out).lines().findFirst().orElseThrow();
                assertTrue(ready.startsWith("mounted=True READY=1|STATUS=serving " + m.store), ready);

                m.vmfuse("umount", m.mnt.toString()).assertOk();
                assertTrue(daemon.process.waitFor(60, TimeUnit.SECONDS), daemon.output());
                assertEquals(0, daemon.process.exitValue(), daemon.output());
                assertTrue(listener.process.waitFor(30, TimeUnit.SECONDS), listener.output());
                String stopping = Files.readString(out).lines().reduce((a, b) -> b).orElseThrow();
                assertTrue(stopping.startsWith("mounted=False STOPPING=1|STATUS="), stopping);
            }
        }
    }
}
