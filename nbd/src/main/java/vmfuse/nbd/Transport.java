package vmfuse.nbd;

import java.io.EOFException;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;

import org.bouncycastle.tls.TlsServerProtocol;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A client's socket as its {@link Connection} uses it: reads and writes that never wait, waits
 * for the socket to be readable or writable (one selector each, so the reading thread and a
 * sending thread wait apart), and, once the client asked for it (STARTTLS), TLS between them and
 * the socket: BouncyCastle's TLS API in its non-blocking mode, with the keys of a {@link TlsPsk}.
 *
 * <p>Reads come from one thread at a time (the connection's), writes from one thread at a time
 * (under the connection's reply lock); with TLS both go through one session, guarded by it.
 * {@link #hangUp} may come from any thread.
 */
final class Transport {
    private static final Logger log = LoggerFactory.getLogger(Transport.class);
    /** Plain text encrypted in one write at most: what TLS holds before it is on the socket. */
    private static final int TLS_WRITE = 64 * 1024;

    private final SocketChannel ch;
    private final Selector readable;
    private final Selector writable;
    private volatile Tls tls;

    private Transport(SocketChannel ch, Selector readable, Selector writable) {
        this.ch = ch;
        this.readable = readable;
        this.writable = writable;
    }

    /** Makes {@code ch} non-blocking, with its two selectors; the channel is closed if that fails. */
    static Transport open(SocketChannel ch) throws IOException {
        Selector r = null;
        Selector w = null;
        try {
            ch.configureBlocking(false);
            r = Selector.open();
            ch.register(r, SelectionKey.OP_READ);
            w = Selector.open();
            ch.register(w, SelectionKey.OP_WRITE);
            return new Transport(ch, r, w);
        } catch (IOException | RuntimeException e) {
            closeQuietly(r);
            closeQuietly(w);
            throw e;
        }
    }

    /** What the client sent, into {@code dst}: through TLS once it is on. 0 if nothing now, -1 at its end. */
    int read(ByteBuffer dst) throws IOException {
        Tls t = tls;
        return t == null ? ch.read(dst) : t.read(dst);
    }

    /** Sends what of {@code src} the socket takes now (through TLS once it is on); the bytes of {@code src} taken. */
    long write(ByteBuffer[] src) throws IOException {
        Tls t = tls;
        return t == null ? ch.write(src) : t.write(src);
    }

    /** Whether everything taken is on the socket (TLS may hold records it could not send yet). */
    boolean flushed() throws IOException {
        Tls t = tls;
        return t == null || t.flush();
    }

    boolean tls() {
        return tls != null;
    }

    /** Whether the socket has something to read now (or is closed), without waiting. */
    boolean readableNow() throws IOException {
        if (readable.selectNow() == 0) {
            return !ch.isOpen();
        }
        readable.selectedKeys().clear();
        return true;
    }

    void awaitReadable() throws IOException {
        readable.select();
        readable.selectedKeys().clear();
        if (!ch.isOpen()) {
            throw new ClosedChannelException();
        }
    }

    /** Waits up to a second for room on the socket: the caller checks again whether the client is gone. */
    void awaitWritable() throws IOException {
        writable.select(1000);
        writable.selectedKeys().clear();
        if (!ch.isOpen()) {
            throw new ClosedChannelException();
        }
    }

    /**
     * TLS from here on: {@code early}, what the client sent past STARTTLS, is already its TLS;
     * the handshake runs to its end (the server's watchdog bounds it). Returns the identity whose
     * key the client proved it holds; IOException if it did not.
     */
    String startTls(TlsPsk psk, byte[] early) throws IOException {
        Tls t = new Tls();
        t.start(psk, early);
        tls = t;
        t.handshake();
        return t.identity[0];
    }

    /** Sends close_notify if TLS is on, as far as the socket takes it now. */
    void closeTls(String who) {
        Tls t = tls;
        if (t != null) {
            t.close(who);
        }
    }

    /** Hangs up: the reader and a sender waiting or at their next call on the socket find it closed. */
    void hangUp() {
        hangUp(ch);
        readable.wakeup();
        writable.wakeup();
    }

    /** Hangs up on a client whose transport is not made yet (its selectors would not be waited on). */
    static void hangUp(SocketChannel ch) {
        try {
            ch.close();
        } catch (IOException ignored) {
            // closing a socket
        }
    }

    /** Lets go of the selectors, once the connection's threads are done with them. */
    void release() {
        closeQuietly(readable);
        closeQuietly(writable);
    }

    private static void closeQuietly(Selector s) {
        if (s != null) {
            try {
                s.close();
            } catch (IOException ignored) {
                // an epoll descriptor
            }
        }
    }

    /** The host a TCP client connects from; "" on a unix socket. */
    static String remoteHost(SocketChannel ch) {
        try {
            return ch.getRemoteAddress() instanceof InetSocketAddress a ? a.getAddress().getHostAddress() : "";
        } catch (IOException e) {
            return "";
        }
    }

    /** One connection's TLS session, in BouncyCastle's non-blocking mode over the channel. */
    private final class Tls {
        private final TlsServerProtocol protocol = new TlsServerProtocol();
        private final String[] identity = new String[1];
        private final ByteBuffer net = ByteBuffer.allocate(32 * 1024);
        /** Records made and not yet on the socket. Guarded by this. */
        private ByteBuffer records = ByteBuffer.allocate(0);

        void start(TlsPsk psk, byte[] early) throws IOException {
            synchronized (this) {
                protocol.accept(psk.server(identity));
                if (early.length > 0) {
                    protocol.offerInput(early);
                }
            }
        }

        void handshake() throws IOException {
            while (true) {
                while (!flush()) {
                    awaitWritable();
                }
                synchronized (this) {
                    if (!protocol.isHandshaking()) {
                        break;
                    }
                }
                net.clear();
                int n = ch.read(net);
                if (n < 0) {
                    throw new EOFException("the client hung up in the TLS handshake");
                }
                if (n == 0) {
                    awaitReadable();
                    continue;
                }
                synchronized (this) {
                    protocol.offerInput(net.array(), 0, n);
                }
            }
            if (identity[0] == null) {
                throw new IOException("no identity");
            }
        }

        int read(ByteBuffer dst) throws IOException {
            synchronized (this) {
                if (protocol.getAvailableInputBytes() > 0) {
                    return protocol.readInput(dst, Math.min(dst.remaining(), protocol.getAvailableInputBytes()));
                }
            }
            net.clear();
            int n = ch.read(net);
            if (n <= 0) {
                return n;
            }
            synchronized (this) {
                protocol.offerInput(net.array(), 0, n);
                flush();
                if (protocol.isClosed() && protocol.getAvailableInputBytes() == 0) {
                    return -1; // close_notify
                }
                int avail = protocol.getAvailableInputBytes();
                return avail == 0 ? 0 : protocol.readInput(dst, Math.min(dst.remaining(), avail));
            }
        }

        /** Encrypts up to TLS_WRITE bytes of {@code src} once what was encrypted before is on the socket. */
        synchronized long write(ByteBuffer[] src) throws IOException {
            if (!flush()) {
                return 0;
            }
            long taken = 0;
            for (ByteBuffer b : src) {
                while (b.hasRemaining() && taken < TLS_WRITE) {
                    int n = (int) Math.min(b.remaining(), TLS_WRITE - taken);
                    byte[] plain = new byte[n];
                    b.get(plain);
                    protocol.writeApplicationData(plain, 0, n);
                    taken += n;
                }
            }
            flush();
            return taken;
        }

        synchronized void close(String who) {
            try {
                protocol.close();
                flush();
            } catch (IOException e) {
                log.debug("nbd client={} TLS close: {}", who, e.toString());
            }
        }

        /** Puts what TLS made on the socket as far as it takes it; true if all of it is there. */
        synchronized boolean flush() throws IOException {
            while (true) {
                if (!records.hasRemaining()) {
                    int avail = protocol.getAvailableOutputBytes();
                    if (avail == 0) {
                        return true;
                    }
                    byte[] b = new byte[avail];
                    protocol.readOutput(b, 0, avail);
                    records = ByteBuffer.wrap(b);
                }
                ch.write(records);
                if (records.hasRemaining()) {
                    return false;
                }
            }
        }
    }
}
