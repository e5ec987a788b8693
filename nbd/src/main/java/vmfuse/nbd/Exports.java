package vmfuse.nbd;

import java.util.List;

/** The exports a server offers: listed and opened by name, for one client at a time. */
public interface Exports {

    /** The names a client may see (NBD_OPT_LIST). */
    List<String> names();

    /** Opens export {@code name} for a connection; null if there is none of that name. */
    Export open(String name) throws ExportException;

    /** The scheduler's share export {@code name}'s requests are counted in: by default its own. */
    default String share(String name) {
        return name;
    }
}
