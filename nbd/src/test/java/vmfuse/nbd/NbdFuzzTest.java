package vmfuse.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Random and mutated byte streams against the handshake and request parser (seeded, bounded;
 * vmfuse.nbd.fuzz.streams raises the count): whatever arrives, the server answers or hangs up,
 * every connection ends, every export it opened is closed, and a well-formed client is served
 * afterwards.
 */
class NbdFuzzTest {
    private static final int STREAMS = Integer.getInteger("vmfuse.nbd.fuzz.streams", 400);
    private static final long SEED = Long.getLong("vmfuse.nbd.fuzz.seed", 20261202L);

    @TempDir
    Path dir;

    /** A well-formed session: handshake, GO on "disk" with structured replies and base:allocation, requests. */
    private static byte[] valid() {
        ByteBuffer b = ByteBuffer.allocate(4096);
        b.putInt(3); // client flags: fixed newstyle, no zeroes
        byte[] name = "disk".getBytes();
        b.putLong(Nbd.IHAVEOPT).putInt(Nbd.OPT_STRUCTURED_REPLY).putInt(0);
        byte[] ctx = Nbd.BASE_ALLOCATION.getBytes();
        b.putLong(Nbd.IHAVEOPT).putInt(Nbd.OPT_SET_META_CONTEXT).putInt(4 + name.length + 4 + 4 + ctx.length)
                .putInt(name.length).put(name).putInt(1).putInt(ctx.length).put(ctx);
        b.putLong(Nbd.IHAVEOPT).putInt(Nbd.OPT_GO).putInt(4 + name.length + 2 + 2).putInt(name.length).put(name)
                .putShort((short) 1).putShort((short) Nbd.INFO_BLOCK_SIZE);
        long cookie = 1;
        b.putInt(Nbd.REQUEST_MAGIC).putShort((short) 0).putShort((short) Nbd.CMD_WRITE).putLong(cookie++).putLong(4096)
                .putInt(512).put(new byte[512]);
        b.putInt(Nbd.REQUEST_MAGIC).putShort((short) 0).putShort((short) Nbd.CMD_READ).putLong(cookie++).putLong(0)
                .putInt(8192);
        b.putInt(Nbd.REQUEST_MAGIC).putShort((short) 0).putShort((short) Nbd.CMD_BLOCK_STATUS).putLong(cookie++)
                .putLong(0).putInt(65536);
        b.putInt(Nbd.REQUEST_MAGIC).putShort((short) 1).putShort((short) Nbd.CMD_TRIM).putLong(cookie++).putLong(0)
                .putInt(4096);
        b.putInt(Nbd.REQUEST_MAGIC).putShort((short) 0).putShort((short) Nbd.CMD_FLUSH).putLong(cookie).putLong(0)
                .putInt(0);
        byte[] out = new byte[b.position()];
        b.flip().get(out);
        return out;
    }

    private static byte[] mutate(byte[] valid, Random r) {
        byte[] b;
        switch (r.nextInt(5)) {
            case 0 -> { // noise
                b = new byte[r.nextInt(2048)];
                r.nextBytes(b);
            }
            case 1 -> b = java.util.Arrays.copyOf(valid, r.nextInt(valid.length)); // truncated
            case 2 -> { // bytes flipped
                b = valid.clone();
                for (int i = 0, n = 1 + r.nextInt(8); i < n; i++) {
                    b[r.nextInt(b.length)] ^= (byte) (1 << r.nextInt(8));
                }
            }
            case 3 -> { // a length field set huge
                b = valid.clone();
                int at = r.nextInt(b.length - 4);
                b[at] = (byte) 0xff;
                b[at + 1] = (byte) r.nextInt(256);
            }
            default -> { // random bytes spliced into the middle
                int at = r.nextInt(valid.length);
                byte[] junk = new byte[1 + r.nextInt(64)];
                r.nextBytes(junk);
                b = new byte[valid.length + junk.length];
                System.arraycopy(valid, 0, b, 0, at);
                System.arraycopy(junk, 0, b, at, junk.length);
                System.arraycopy(valid, at, b, at + junk.length, valid.length - at);
            }
        }
        return b;
    }

    /** Sends {@code stream}, closes its sending side, and reads what comes back until the server hangs up. */
    private static void session(Path socket, byte[] stream) throws IOException {
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(socket));
            ByteBuffer out = ByteBuffer.wrap(stream);
            try {
                while (out.hasRemaining()) {
                    ch.write(out);
                }
                ch.shutdownOutput();
            } catch (IOException e) {
                return; // the server hung up first
            }
            ByteBuffer in = ByteBuffer.allocate(1 << 16);
            long read = 0;
            try {
                int n;
                while ((n = ch.read(in.clear())) >= 0) {
                    read += n;
                    assertTrue(read < 64L << 20, "the server kept sending");
                }
            } catch (IOException e) {
                // reset: hung up
            }
        }
    }

    @Test
    @Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
    void randomAndMutatedStreamsEndTheirConnectionsAndLeaveTheServerServing() throws Exception {
        MemoryExport disk = new MemoryExport(1 << 20);
        try (Scheduler scheduler = new Scheduler(2);
                NbdServer server = NbdServer.listen(dir.resolve("nbd.sock"),
                        MemoryExport.serving(Map.of("disk", disk)), NbdServer.Limits.of(8), scheduler)) {
            byte[] valid = valid();
            session(server.socket(), valid); // the well-formed session itself runs to its end
            Random r = new Random(SEED);
            for (int i = 0; i < STREAMS; i++) {
                session(server.socket(), mutate(valid, r));
            }
            for (int i = 0; i < 200 && server.clients() > 0; i++) {
                Thread.sleep(25);
            }
            assertEquals(0, server.clients(), "every connection ended");
            assertEquals(disk.opens.get(), disk.closes.get(), "every export opened was closed");
            assertTrue(disk.opens.get() > 0, "some streams got as far as an open");
            disk.disk[0] = 7;
            session(server.socket(), valid);
            assertEquals(0, disk.disk[0], "the well-formed session's trim went through after it all");
        }
    }
}
