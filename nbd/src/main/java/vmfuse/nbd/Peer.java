package vmfuse.nbd;

import java.nio.file.attribute.UserPrincipal;

/**
 * Who is at the other end of a connection: {@code id} names it in the log ("unix#12",
 * "tcp#3"); {@code user} is the user its process runs as (SO_PEERCRED on a unix socket), null on
 * TCP; {@code tlsIdentity} the pre-shared key's identity it proved over TLS (TCP), null before.
 * The user or the identity decides what it may list and open.
 */
public record Peer(String id, UserPrincipal user, String tlsIdentity) {
    public Peer(String id, UserPrincipal user) {
        this(id, user, null);
    }

    /** Whose connection it is, for what all of one tenant's connections share: its key identity, else its user. */
    String tenant() {
        return tlsIdentity != null ? "psk:" + tlsIdentity : user != null ? "user:" + user.getName() : id;
    }

    Peer withTlsIdentity(String identity) {
        return new Peer(id, user, identity);
    }

    @Override
    public String toString() {
        return id + (user != null ? "(" + user.getName() + ")" : "") + (tlsIdentity != null ? "(psk " + tlsIdentity
                + ")" : "");
    }
}
