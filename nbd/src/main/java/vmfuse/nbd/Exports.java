package vmfuse.nbd;

import java.util.List;

/**
 * The exports a server offers, as each client may see them: a client is told of, and may open,
 * only what is its own ({@link Peer#user}); to it anything else does not exist.
 */
public interface Exports {

    /** Whether {@code peer} may connect at all: one that could see nothing is hung up on at once. */
    default boolean admits(Peer peer) {
        return true;
    }

    /** The names {@code peer} may see (NBD_OPT_LIST). */
    List<String> names(Peer peer);

    /** Whether {@code peer} may see export {@code name}. */
    default boolean visible(Peer peer, String name) {
        return names(peer).contains(name);
    }

    /** Opens export {@code name} for {@code peer}'s connection; null if there is none of that name it may see. */
    Export open(Peer peer, String name) throws ExportException;

    /** The scheduler's share export {@code name}'s requests are counted in: by default its own. */
    default String share(String name) {
        return name;
    }
}
