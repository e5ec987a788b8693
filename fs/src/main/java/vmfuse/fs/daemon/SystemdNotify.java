package vmfuse.fs.daemon;

import java.nio.charset.StandardCharsets;

import jnr.ffi.Memory;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import vmfuse.fs.nativeio.LibC;
import vmfuse.fs.nativeio.Native;

/**
 * Tells systemd how the daemon is doing, as sd_notify(3) does, when a unit of Type=notify
 * started it: one datagram of {@code KEY=VALUE} lines to the unix socket named by
 * $NOTIFY_SOCKET (a path, or an abstract name after '@'). Without that variable, nothing.
 * READY=1 once the mount is live (vmfuse@.service's start then returns, and units ordered after
 * it find the mount there), STOPPING=1 when the unmount begins; STATUS= says what it does.
 */
public final class SystemdNotify {
    private static final Logger log = LoggerFactory.getLogger(SystemdNotify.class);
    private static final int AF_UNIX = 1;
    private static final int SOCK_DGRAM = 2;
    private static final int SOCK_CLOEXEC = 02000000;
    private static final int MSG_NOSIGNAL = 0x4000;
    /** sizeof(struct sockaddr_un): sa_family_t then sun_path[108]. */
    private static final int SUN_PATH = 108;

    private SystemdNotify() {}

    /** Sends {@code state} (e.g. "READY=1\nSTATUS=...") if systemd asked for it; logs, never throws, if it cannot. */
    public static void send(String state) {
        String socket = System.getenv("NOTIFY_SOCKET");
        if (socket == null || socket.isEmpty()) {
            return;
        }
        String error = sendTo(socket, state);
        if (error != null) {
            log.warn("cannot notify systemd at {}: {}", socket, error);
        }
    }

    /** Sends {@code state} to {@code socket}; null, or why it could not. */
    static String sendTo(String socket, String state) {
        byte[] name = socket.getBytes(StandardCharsets.UTF_8);
        boolean abstractName = name[0] == '@';
        if (name[0] != '/' && !abstractName) {
            return "not a unix socket's path or abstract name";
        }
        if (name.length > SUN_PATH || (!abstractName && name.length == SUN_PATH)) { // a path needs its NUL
            return "a socket name longer than sun_path's " + SUN_PATH + " bytes";
        }
        Runtime rt = Runtime.getRuntime(LibC.INSTANCE);
        Pointer addr = Memory.allocateDirect(rt, 2 + SUN_PATH, true);
        addr.putShort(0, (short) AF_UNIX);
        addr.put(2, name, 0, name.length);
        if (abstractName) {
            addr.putByte(2, (byte) 0); // the abstract namespace: a leading NUL, the length says where it ends
        }
        int addrLen = 2 + name.length + (abstractName ? 0 : 1);
        byte[] msg = state.getBytes(StandardCharsets.UTF_8);
        Pointer buf = Memory.allocateDirect(rt, msg.length);
        buf.put(0, msg, 0, msg.length);
        int fd = LibC.INSTANCE.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            return "socket: errno " + Native.errno();
        }
        try {
            long sent = LibC.INSTANCE.sendto(fd, buf, msg.length, MSG_NOSIGNAL, addr, addrLen);
            return sent == msg.length ? null : "sendto: errno " + Native.errno();
        } finally {
            LibC.INSTANCE.close(fd);
        }
    }
}
