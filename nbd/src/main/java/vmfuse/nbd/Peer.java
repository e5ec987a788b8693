package vmfuse.nbd;

import java.nio.file.attribute.UserPrincipal;

/**
 * Who is at the other end of a connection: {@code id} names it in the log ("unix#12");
 * {@code user} is the user its process runs as (SO_PEERCRED on a unix socket), which decides what
 * it may list and open; null if it could not be told.
 */
public record Peer(String id, UserPrincipal user) {
    @Override
    public String toString() {
        return user == null ? id : id + "(" + user.getName() + ")";
    }
}
