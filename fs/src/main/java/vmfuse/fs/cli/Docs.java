package vmfuse.fs.cli;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

import picocli.AutoComplete;
import picocli.CommandLine;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Model.OptionSpec;
import picocli.CommandLine.Model.PositionalParamSpec;

/**
 * Writes the manual pages and the bash completion of the vmfuse command from its picocli
 * definitions, so that they say what {@code --help} says (make install runs it):
 * {@code java -cp vmfuse.jar vmfuse.fs.cli.Docs MANDIR COMPLETIONFILE} writes MANDIR/vmfuse.1,
 * MANDIR/vmfuse-mount.1, ... one page per command and subcommand, and the completion script.
 */
public final class Docs {
    private Docs() {}

    public static void main(String[] args) throws IOException {
        if (args.length != 2) {
            System.err.println("usage: Docs MANDIR COMPLETIONFILE");
            System.exit(2);
        }
        CommandLine root = new CommandLine(new Main());
        Path man = Path.of(args[0]);
        Files.createDirectories(man);
        List<CommandLine> all = new ArrayList<>();
        collect(root, all);
        for (CommandLine c : all) {
            Files.writeString(man.resolve(pageName(c.getCommandSpec()) + ".1"), page(c.getCommandSpec(), all),
                    StandardCharsets.UTF_8);
        }
        Path completion = Path.of(args[1]);
        if (completion.getParent() != null) {
            Files.createDirectories(completion.getParent());
        }
        Files.writeString(completion, AutoComplete.bash("vmfuse", root), StandardCharsets.UTF_8);
    }

    /** The command and its subcommands, depth first, but for picocli's own help command. */
    private static void collect(CommandLine c, List<CommandLine> out) {
        out.add(c);
        for (CommandLine sub : c.getSubcommands().values()) {
            if (sub.getCommandSpec().userObject() instanceof CommandLine.HelpCommand || out.contains(sub)) {
                continue; // the help command, and aliases (umount's unmount) seen already
            }
            collect(sub, out);
        }
    }

    /** vmfuse, vmfuse-mount, vmfuse-journal-create. */
    static String pageName(CommandSpec spec) {
        return spec.qualifiedName("-");
    }

    /** One command's page, in man(7) macros. */
    static String page(CommandSpec spec, List<CommandLine> all) {
        StringBuilder b = new StringBuilder();
        String name = pageName(spec);
        String version = new Main.Version().getVersion()[0];
        b.append(".\\\" Written by vmfuse.fs.cli.Docs from the command's own definitions; do not edit.\n");
        b.append(".TH ").append(name.toUpperCase(Locale.ROOT).replace("-", "\\-")).append(" 1 \"\" \"")
                .append(text(version)).append("\" \"vmfuse manual\"\n");
        b.append(".ad l\n.nh\n"); // ragged right, no hyphens: option names and paths stay whole
        b.append(".SH NAME\n").append(name.replace("-", "\\-")).append(" \\- ")
                .append(text(firstSentence(spec.usageMessage().description()))).append('\n');
        b.append(".SH SYNOPSIS\n.nf\n");
        String synopsis = new CommandLine.Help(spec, new CommandLine.Help.ColorScheme.Builder(CommandLine.Help.Ansi.OFF)
                .build()).synopsis(0).strip();
        b.append(text(synopsis.startsWith("Usage: ") ? synopsis.substring("Usage: ".length()) : synopsis)).append('\n');
        b.append(".fi\n");
        b.append(".SH DESCRIPTION\n");
        paragraph(b, spec.usageMessage().description());
        List<PositionalParamSpec> params = spec.positionalParameters();
        if (!params.isEmpty()) {
            b.append(".SH ARGUMENTS\n");
            for (PositionalParamSpec p : params) {
                b.append(".TP\n.I ").append(text(p.paramLabel())).append('\n');
                paragraph(b, p.description());
            }
        }
        b.append(".SH OPTIONS\n");
        for (OptionSpec o : spec.options()) {
            if (o.hidden()) {
                continue;
            }
            b.append(".TP\n.B ").append(text(String.join(", ", o.names())));
            if (o.arity().max() > 0 && !o.paramLabel().isEmpty()) {
                b.append(" \\fI").append(text(o.paramLabel())).append("\\fR");
            }
            b.append('\n');
            paragraph(b, o.description());
        }
        List<CommandLine> subs = spec.subcommands().values().stream().distinct()
                .filter(c -> !(c.getCommandSpec().userObject() instanceof CommandLine.HelpCommand)).toList();
        if (!subs.isEmpty()) {
            b.append(".SH COMMANDS\n");
            for (CommandLine c : subs) {
                b.append(".TP\n.BR ").append(pageName(c.getCommandSpec()).replace("-", "\\-")).append(" (1)\n");
                paragraph(b, c.getCommandSpec().usageMessage().description());
            }
        }
        List<String> footer = List.of(spec.usageMessage().footer());
        int examples = footer.indexOf("Examples:");
        if (examples >= 0) {
            b.append(".SH EXAMPLES\n.nf\n");
            for (String line : footer.subList(examples + 1, footer.size())) {
                b.append(text(line.strip())).append('\n');
            }
            b.append(".fi\n");
        }
        b.append(".SH SEE ALSO\n");
        List<String> see = new ArrayList<>();
        CommandSpec parent = spec.parent();
        if (parent != null) {
            see.add(pageName(parent));
        } else {
            for (CommandLine c : all) {
                if (c.getCommandSpec().parent() == spec) {
                    see.add(pageName(c.getCommandSpec()));
                }
            }
        }
        see.add("qemu-img");
        see.add("nbdinfo");
        b.append(String.join(",\n", see.stream().map(s -> ".BR " + s.replace("-", "\\-") + " (1)").toList()));
        b.append("\n.PP\nThe full manual: README.md of the vmfuse sources.\n");
        return b.toString();
    }

    /** Description lines as one paragraph (they are wrapped lines of it, as --help prints them). */
    private static void paragraph(StringBuilder b, String[] lines) {
        String joined = String.join(" ", List.of(lines).stream().map(String::strip).toList()).strip();
        if (!joined.isEmpty()) {
            b.append(text(joined)).append('\n');
        }
    }

    private static String firstSentence(String[] description) {
        String d = description.length == 0 ? "" : description[0].strip();
        int stop = d.indexOf(". ");
        d = stop > 0 ? d.substring(0, stop) : d;
        return d.endsWith(".") ? d.substring(0, d.length() - 1) : d;
    }

    /**
     * Text safe in a man page: backslashes and hyphens escaped, no line that starts as a request,
     * a line allowed to break after a comma (a list of mount options is one long word).
     */
    static String text(String s) {
        String t = s.replace("\\", "\\e").replace("-", "\\-").replace(",", ",\\:");
        StringBuilder out = new StringBuilder();
        for (String line : t.split("\n", -1)) {
            if (out.length() > 0) {
                out.append('\n');
            }
            if (line.startsWith(".") || line.startsWith("'")) {
                out.append("\\&");
            }
            out.append(line);
        }
        return out.toString();
    }
}
