package vmfuse.nbd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A server's socket path is taken from nobody: a stale socket goes, a live one or a file stays. */
class SocketPathTest {
    @TempDir
    Path dir;

    private static ServerSocketChannel listen(Path at) throws IOException {
        ServerSocketChannel s = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        s.bind(UnixDomainSocketAddress.of(at));
        return s;
    }

    @Test
    void aStaleSocketIsReplacedAndNothingThereIsFine() throws Exception {
        Path sock = dir.resolve("s.sock");
        SocketPath.clear(sock);
        listen(sock).close(); // closed: the file stays, nobody listens
        assertTrue(Files.exists(sock));
        SocketPath.clear(sock);
        assertFalse(Files.exists(sock));
    }

    @Test
    void aSocketAnotherProcessListensOnIsRefusedAndKept() throws Exception {
        Path sock = dir.resolve("s.sock");
        try (ServerSocketChannel other = listen(sock)) {
            IOException e = assertThrows(IOException.class, () -> SocketPath.clear(sock));
            assertTrue(e.getMessage().contains("in use"), e.getMessage());
            assertTrue(Files.exists(sock));
        }
    }

    @Test
    void aFileADirectoryOrALinkIsNoSocketAndIsKept() throws Exception {
        Path file = Files.write(dir.resolve("vm1.raw"), new byte[] {1, 2, 3});
        IOException e = assertThrows(IOException.class, () -> SocketPath.clear(file));
        assertTrue(e.getMessage().contains("not a socket"), e.getMessage());
        assertArrayEquals(new byte[] {1, 2, 3}, Files.readAllBytes(file));
        Path d = Files.createDirectory(dir.resolve("d"));
        assertThrows(IOException.class, () -> SocketPath.clear(d));
        Path link = Files.createSymbolicLink(dir.resolve("l"), dir.resolve("nowhere"));
        assertThrows(IOException.class, () -> SocketPath.clear(link));
        assertTrue(Files.isSymbolicLink(link));
    }

    @Test
    void installPutsTheBoundSocketThereOnlyIfNothingIs() throws Exception {
        Path sock = dir.resolve("s.sock");
        Path bound = dir.resolve(".s.sock.binding");
        try (ServerSocketChannel mine = listen(bound)) {
            Files.write(sock, new byte[] {9}); // taken meanwhile
            assertThrows(IOException.class, () -> SocketPath.install(bound, sock));
            assertArrayEquals(new byte[] {9}, Files.readAllBytes(sock));
            assertFalse(Files.exists(bound));
        }
        try (ServerSocketChannel mine = listen(bound)) {
            Files.delete(sock);
            SocketPath.install(bound, sock);
            assertFalse(Files.exists(bound));
            assertThrows(IOException.class, () -> SocketPath.clear(sock), "it listens there now");
        }
    }
}
