package vmfuse.fs.cli;

import ch.qos.logback.classic.Level;
import org.slf4j.LoggerFactory;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine;
import vmfuse.fs.daemon.Daemon;

/**
 * The vmfuse command. Every failure prints one line, "vmfuse: REASON", to stderr and exits 1
 * (2 for a usage error); --debug adds the stack trace.
 */
@Command(name = "vmfuse", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = "A FUSE filesystem for hypervisor hosts: VM images and journal devices as files.",
        subcommands = {MountCommand.class, UmountCommand.class, StatusCommand.class, JournalCommand.class, VmCommand.class, ExportCommand.class,
            CommandLine.HelpCommand.class},
        footer = {"", "See README.md for the full manual."})
public final class Main {

    @Option(names = "--debug", scope = CommandLine.ScopeType.INHERIT,
            description = "Log at debug level and print stack traces of failures.")
    static void debug(boolean on) {
        debug = on;
        if (on) {
            ((ch.qos.logback.classic.Logger) LoggerFactory.getLogger("vmfuse")).setLevel(Level.DEBUG);
        }
    }

    static boolean debug;

    public static void main(String[] args) {
        CommandLine cli = new CommandLine(new Main());
        cli.setUsageHelpWidth(120); // the descriptions are written as lines of up to ~110 characters: not re-wrapped at 80
        cli.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            String msg = ex.getMessage() != null ? ex.getMessage() : ex.toString();
            cmd.getErr().println("vmfuse: " + msg);
            if (debug) {
                ex.printStackTrace(cmd.getErr());
            }
            return 1;
        });
        int rc = cli.execute(args);
        if (Daemon.shuttingDown()) {
            return; // a signal is shutting the JVM down; System.exit would wait for it forever
        }
        System.exit(rc);
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = Main.class.getPackage().getImplementationVersion();
            return new String[] {"vmfuse " + (v != null ? v : "(development build)")};
        }
    }
}
