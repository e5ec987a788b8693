package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.stream.Stream;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * make install, as an operator or a packager runs it: the command runs from its PREFIX, every
 * command's manual page renders with man, bash completes, and systemd-analyze finds the unit
 * template sound.
 */
@Tag("integration")
class InstallTest {
    static Path root;
    static Path prefix;

    @BeforeAll
    static void install() throws Exception {
        root = Files.createTempDirectory(Path.of("/tmp"), "vmfuse-install-");
        prefix = root.resolve("prefix");
        Proc.ok("make", "-s", "-C", Mounted.REPO.toString(), "install", "PREFIX=" + prefix);
    }

    @AfterAll
    static void clean() {
        Proc.run("rm", "-rf", root.toString());
    }

    @Test
    void theCommandRunsFromItsPrefix() throws Exception {
        assertTrue(Files.isRegularFile(prefix.resolve("lib/vmfuse/vmfuse.jar")));
        Proc.Result r = Proc.run(Duration.ofSeconds(60), prefix.resolve("bin/vmfuse").toString(), "--version");
        assertEquals(0, r.exit(), r.err());
        assertTrue(r.out().startsWith("vmfuse "), r.out());
    }

    @Test
    void everyCommandHasAPageThatManRendersCleanly() throws Exception {
        Path man1 = prefix.resolve("share/man/man1");
        List<String> pages;
        try (Stream<Path> s = Files.list(man1)) {
            pages = s.map(p -> p.getFileName().toString()).sorted().toList();
        }
        for (String expected : new String[] {"vmfuse.1", "vmfuse-mount.1", "vmfuse-umount.1", "vmfuse-status.1",
                "vmfuse-journal.1", "vmfuse-journal-create.1", "vmfuse-vm-add.1", "vmfuse-export-add.1",
                "vmfuse-export-set.1"}) {
            assertTrue(pages.contains(expected), expected + " in " + pages);
        }
        for (String page : pages) {
            Proc.Result r = Proc.run(Duration.ofSeconds(30), "env", "MANWIDTH=80", "man", "--warnings", "-l", "-P", "cat",
                    man1.resolve(page).toString());
            assertEquals(0, r.exit(), page + ": " + r.err());
            assertEquals("", r.err().trim(), page + ": troff's warnings");
            assertTrue(r.out().contains("SYNOPSIS") && r.out().contains("OPTIONS"), page + ":\n" + r.out());
        }
        String mount = Proc.ok("env", "MANWIDTH=80", "man", "-l", "-P", "cat", man1.resolve("vmfuse-mount.1").toString()).out();
        assertTrue(mount.contains("--metrics HOST:PORT") && mount.contains("--nbd unix:PATH|tcp:HOST:PORT"), mount);
        assertTrue(mount.contains("EXAMPLES") && mount.contains("vmfuse mount --store /var/lib/vmfuse /srv/vmfuse"), mount);
        // the page is found by name once its directory is on MANPATH
        String byName = Proc.ok("env", "MANPATH=" + prefix.resolve("share/man") + ":", "MANWIDTH=80", "man", "-P", "cat",
                "vmfuse-export-add").out();
        assertTrue(byName.contains("--psk-identity"), byName);
    }

    @Test
    void bashCompletesCommandsAndOptions() throws Exception {
        Path completion = prefix.resolve("share/bash-completion/completions/vmfuse");
        String script = """
                source "$1"
                complete_line() { COMP_WORDS=($2); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_LINE="$2";
                    COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _complete_vmfuse 2>/dev/null; echo "${COMPREPLY[*]}"; }
                complete_line x "vmfuse mo"
                complete_line x "vmfuse mount --met"
                complete_line x "vmfuse export s"
                complete -p vmfuse
                """;
        List<String> out = Proc.ok("bash", "-c", script, "-", completion.toString()).out().lines().toList();
        assertEquals("mount", out.get(0), out.toString());
        assertEquals("--metrics", out.get(1), out.toString());
        assertEquals("set", out.get(2), out.toString());
        assertTrue(out.get(3).contains("-F _complete_vmfuse") && out.get(3).endsWith(" vmfuse"), out.toString());
    }

    /** systemd-analyze verify prints nothing for a sound unit (a bad key is only a warning: it exits 0). */
    @Test
    void systemdFindsTheUnitSound() throws Exception {
        String unit = Files.readString(prefix.resolve("lib/systemd/system/vmfuse@.service"));
        assertTrue(unit.contains("ExecStart=" + prefix.resolve("bin/vmfuse") + " mount --foreground --force --store %f"),
                unit);
        assertTrue(unit.contains("Type=notify"), unit);
        Path instance = root.resolve("vmfuse@var-lib-vmfuse.service"); // verify loads an instance, not a template
        Files.writeString(instance, unit);
        // Documentation=man:... is checked too: the pages are found through MANPATH
        Proc.Result r = Proc.run(Duration.ofSeconds(60), "env", "MANPATH=" + prefix.resolve("share/man") + ":",
                "systemd-analyze", "verify", instance.toString());
        assertEquals(0, r.exit(), r.out() + r.err());
        assertEquals("", (r.out() + r.err()).trim(), "systemd-analyze's complaints");

        Path broken = root.resolve("vmfuse@broken.service");
        Files.writeString(broken, unit.replace("Type=notify", "Type=notified"));
        Proc.Result bad = Proc.run(Duration.ofSeconds(60), "env", "MANPATH=" + prefix.resolve("share/man") + ":",
                "systemd-analyze", "verify", broken.toString());
        assertFalse((bad.out() + bad.err()).isBlank(), "the check sees a bad unit");
    }

    /** DESTDIR stages a package: the files land under it, and name PREFIX. */
    @Test
    void destdirStagesWhatNamesThePrefix() throws Exception {
        Path stage = root.resolve("stage");
        Proc.ok("make", "-s", "-C", Mounted.REPO.toString(), "install", "DESTDIR=" + stage, "PREFIX=/usr");
        assertTrue(Files.isRegularFile(stage.resolve("usr/bin/vmfuse")));
        assertTrue(Files.isRegularFile(stage.resolve("usr/share/man/man1/vmfuse-mount.1")));
        String unit = Files.readString(stage.resolve("usr/lib/systemd/system/vmfuse@.service"));
        assertTrue(unit.contains("ExecStart=/usr/bin/vmfuse mount"), unit);
        assertFalse(unit.contains(stage.toString()), unit);
    }
}
