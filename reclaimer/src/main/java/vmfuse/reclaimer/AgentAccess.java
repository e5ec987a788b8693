package vmfuse.reclaimer;

import java.io.IOException;
import java.nio.file.FileSystems;
import java.nio.file.attribute.GroupPrincipal;
import java.nio.file.attribute.UserPrincipal;
import java.nio.file.attribute.UserPrincipalLookupService;

/**
 * Who may connect to a VM's agent socket: the user its QEMU runs as (root by default), and the
 * members of a group if one is named. The socket is owned by that user, mode 0600 (0660 with the
 * group's), and a peer's credentials (SO_PEERCRED) are checked again at each connection: a VM is
 * known by the socket its agent's bytes arrive on, so only its QEMU (or root) may speak for it.
 */
public record AgentAccess(String user, String group) {
    public static final AgentAccess ROOT = new AgentAccess("root", null);

    public AgentAccess {
        if (user == null || user.isEmpty()) {
            throw new IllegalArgumentException("an agent socket needs a user");
        }
    }

    UserPrincipal userPrincipal() throws IOException {
        return lookup().lookupPrincipalByName(user);
    }

    /** The group, or null for none. */
    GroupPrincipal groupPrincipal() throws IOException {
        return group == null ? null : lookup().lookupPrincipalByGroupName(group);
    }

    private static UserPrincipalLookupService lookup() {
        return FileSystems.getDefault().getUserPrincipalLookupService();
    }

    /** "user" or "user:group", as vms.tsv and the logs write it. */
    @Override
    public String toString() {
        return group == null ? user : user + ":" + group;
    }

    /** Parses {@link #toString()}'s form. */
    public static AgentAccess parse(String s) {
        int colon = s.indexOf(':');
        return colon < 0 ? new AgentAccess(s, null) : new AgentAccess(s.substring(0, colon), s.substring(colon + 1));
    }
}
