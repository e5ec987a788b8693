package vmfuse.nbd;

import static vmfuse.nbd.Nbd.*;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/*
 * One client of the server, from the handshake to its disconnect, on one thread: the fixed
 * newstyle handshake (doc/proto.md), then its requests one at a time, each answered before the
 * next is read.
 *
 *   handshake     S: NBDMAGIC IHAVEOPT flags(FIXED_NEWSTYLE|NO_ZEROES)   C: flags
 *   options       C: IHAVEOPT option length data   S: replies (OPT_REPLY_MAGIC option type length data)
 *                 LIST, INFO, GO, EXPORT_NAME, ABORT, STRUCTURED_REPLY, LIST/SET_META_CONTEXT
 *                 (base:allocation); any other: ERR_UNSUP, and the next option is read
 *   transmission  C: REQUEST_MAGIC flags type cookie offset length [data]
 *                 S: a simple reply (and data), or structured chunks (READ, BLOCK_STATUS, errors)
 *
 * Bounds, whatever a client sends: an option's data at most MAX_OPTION bytes, a request's payload
 * at most MAX_PAYLOAD (INFO_BLOCK_SIZE says so); past either the connection is closed, with a log
 * line, without reading what was announced. Data moves through one buffer of at most CHUNK bytes
 * per connection (a read is sent, a write taken, a CHUNK at a time), so 64 clients hold at most
 * 64 MiB of direct memory, whatever they ask: the journal devices' blocks live there too.
 */
final class Connection implements Runnable {
    private static final Logger log = LoggerFactory.getLogger(Connection.class);
    static final int MAX_OPTION = 64 * 1024;
    static final int MAX_PAYLOAD = 32 << 20;
    static final int CHUNK = 1 << 20;
    private static final int PREFERRED_BLOCK = 4096;
    private static final int CONTEXT_ID = 1;

    private final SocketChannel ch;
    private final Exports exports;
    private final String peer;
    private boolean noZeroes;
    private boolean structured;
    private boolean allocationContext;
    private Export export;
    private String exportName;
    private ByteBuffer payload = ByteBuffer.allocateDirect(PREFERRED_BLOCK * 16);

    /** Closed by the server at its end: the connection stops at its next read. */
    Connection(SocketChannel ch, Exports exports, String peer) {
        this.ch = ch;
        this.exports = exports;
        this.peer = peer;
    }

    /** A client that broke the protocol: the connection is closed, with the reason logged. */
    private static final class Broken extends Exception {
        Broken(String reason) {
            super(reason);
        }
    }

    @Override
    public void run() {
        try {
            if (handshake()) {
                transmission();
            }
        } catch (Broken e) {
            log.warn("nbd client={} export={} closed: {}", peer, exportName, e.getMessage());
        } catch (EOFException e) {
            log.debug("nbd client={} export={} hung up", peer, exportName);
        } catch (IOException e) {
            log.debug("nbd client={} export={} gone: {}", peer, exportName, e.toString());
        } catch (RuntimeException e) {
            log.error("nbd client={} export={} failed unexpectedly", peer, exportName, e);
        } finally {
            if (export != null) {
                export.close();
            }
            try {
                ch.close();
            } catch (IOException ignored) {
                // closing a socket
            }
        }
    }

    // ---- the handshake ------------------------------------------------------------------------

    /** True once an export is open and transmission begins; false if the client aborted. */
    private boolean handshake() throws IOException, Broken {
        ByteBuffer hello = ByteBuffer.allocate(18);
        hello.putLong(NBDMAGIC).putLong(IHAVEOPT).putShort((short) (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
        send(hello.flip());
        int clientFlags = readInt();
        if ((clientFlags & FLAG_FIXED_NEWSTYLE) == 0) {
            throw new Broken("the client does not speak the fixed newstyle handshake (flags " + clientFlags + ")");
        }
        if ((clientFlags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)) != 0) {
            throw new Broken("unknown client flags " + Integer.toHexString(clientFlags));
        }
        noZeroes = (clientFlags & FLAG_NO_ZEROES) != 0;
        while (true) {
            long magic = readLong();
            if (magic != IHAVEOPT) {
                throw new Broken("an option without IHAVEOPT (" + Long.toHexString(magic) + ")");
            }
            int option = readInt();
            long length = Integer.toUnsignedLong(readInt());
            if (length > MAX_OPTION) {
                throw new Broken("option " + option + " of " + length + " bytes, at most " + MAX_OPTION);
            }
            ByteBuffer data = read((int) length);
            switch (option) {
                case OPT_EXPORT_NAME -> {
                    String name = string(data, data.remaining());
                    try {
                        if (!open(name)) {
                            throw new Broken("no export " + name + " (EXPORT_NAME)");
                        }
                    } catch (ExportBusy e) {
                        throw new Broken(e.getMessage() + " (EXPORT_NAME)");
                    }
                    ByteBuffer b = ByteBuffer.allocate(10 + (noZeroes ? 0 : 124));
                    b.putLong(size()).putShort((short) transmissionFlags());
                    send(b.position(b.limit()).flip());
                    return true;
                }
                case OPT_ABORT -> {
                    reply(option, REP_ACK, ByteBuffer.allocate(0));
                    return false;
                }
                case OPT_LIST -> list(option, data);
                case OPT_INFO, OPT_GO -> {
                    if (info(option, data) && option == OPT_GO) {
                        return true;
                    }
                }
                case OPT_STRUCTURED_REPLY -> {
                    if (data.hasRemaining()) {
                        error(option, REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
                    } else {
                        structured = true;
                        reply(option, REP_ACK, ByteBuffer.allocate(0));
                    }
                }
                case OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT -> metaContext(option, data);
                default -> error(option, REP_ERR_UNSUP, "option " + option + " is not supported");
            }
        }
    }

    private void list(int option, ByteBuffer data) throws IOException {
        if (data.hasRemaining()) {
            error(option, REP_ERR_INVALID, "LIST takes no data");
            return;
        }
        for (String name : exports.names()) {
            byte[] b = name.getBytes(StandardCharsets.UTF_8);
            reply(option, REP_SERVER, ByteBuffer.allocate(4 + b.length).putInt(b.length).put(b).flip());
        }
        reply(option, REP_ACK, ByteBuffer.allocate(0));
    }

    /** INFO or GO: the export's size and flags, its block sizes if asked; true if it is open (GO). */
    private boolean info(int option, ByteBuffer data) throws IOException {
        if (data.remaining() < 6) {
            error(option, REP_ERR_INVALID, "INFO/GO of " + data.remaining() + " bytes");
            return false;
        }
        long nameLength = Integer.toUnsignedLong(data.getInt());
        if (nameLength > data.remaining() - 2) {
            error(option, REP_ERR_INVALID, "an export name longer than the option");
            return false;
        }
        String name = string(data, (int) nameLength);
        int requests = Short.toUnsignedInt(data.getShort());
        if (data.remaining() != 2 * requests) {
            error(option, REP_ERR_INVALID, requests + " information requests in " + data.remaining() + " bytes");
            return false;
        }
        boolean blockSize = false;
        for (int i = 0; i < requests; i++) {
            blockSize |= data.getShort() == INFO_BLOCK_SIZE;
        }
        Export previous = export;
        String previousName = exportName;
        try {
            if (!open(name)) {
                error(option, REP_ERR_UNKNOWN, "no export " + name);
                return false;
            }
        } catch (ExportBusy e) {
            error(option, REP_ERR_POLICY, e.getMessage());
            return false;
        }
        reply(option, REP_INFO, ByteBuffer.allocate(12).putShort((short) INFO_EXPORT).putLong(size())
                .putShort((short) transmissionFlags()).flip());
        if (blockSize) {
            reply(option, REP_INFO, ByteBuffer.allocate(14).putShort((short) INFO_BLOCK_SIZE).putInt(1)
                    .putInt(PREFERRED_BLOCK).putInt(MAX_PAYLOAD).flip());
        }
        reply(option, REP_ACK, ByteBuffer.allocate(0));
        if (option == OPT_INFO) { // INFO opens nothing
            export.close();
            export = previous;
            exportName = previousName;
            return false;
        }
        if (previous != null) {
            previous.close();
        }
        return true;
    }

    /** An export's open failed for a reason other than its absence. */
    private static final class ExportBusy extends Exception {
        ExportBusy(String message) {
            super(message);
        }
    }

    /** Opens {@code name} as this connection's export; false if there is none. */
    private boolean open(String name) throws ExportBusy {
        Export e;
        try {
            e = exports.open(name);
        } catch (ExportException ex) {
            throw new ExportBusy("export " + name + " cannot be opened: " + ex.getMessage());
        }
        if (e == null) {
            return false;
        }
        export = e;
        exportName = name;
        return true;
    }

    private long size() throws IOException {
        try {
            return export.size();
        } catch (ExportException e) {
            throw new IOException("size of export " + exportName + ": " + e.getMessage());
        }
    }

    private int transmissionFlags() {
        int f = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA | TF_SEND_TRIM | TF_SEND_WRITE_ZEROES | TF_SEND_CACHE
                | TF_SEND_FAST_ZERO;
        if (structured) {
            f |= TF_SEND_DF;
        }
        if (export.multiConn()) {
            f |= TF_CAN_MULTI_CONN;
        }
        return f;
    }

    /** LIST_META_CONTEXT or SET_META_CONTEXT: base:allocation is the one context there is. */
    private void metaContext(int option, ByteBuffer data) throws IOException {
        if (option == OPT_SET_META_CONTEXT && !structured) {
            error(option, REP_ERR_INVALID, "SET_META_CONTEXT before STRUCTURED_REPLY");
            return;
        }
        if (data.remaining() < 8) {
            error(option, REP_ERR_INVALID, "META_CONTEXT of " + data.remaining() + " bytes");
            return;
        }
        long nameLength = Integer.toUnsignedLong(data.getInt());
        if (nameLength > data.remaining() - 4) {
            error(option, REP_ERR_INVALID, "an export name longer than the option");
            return;
        }
        String name = string(data, (int) nameLength);
        if (!exports.names().contains(name)) {
            error(option, REP_ERR_UNKNOWN, "no export " + name);
            return;
        }
        long queries = Integer.toUnsignedLong(data.getInt());
        List<String> asked = new ArrayList<>();
        for (long i = 0; i < queries; i++) {
            if (data.remaining() < 4) {
                error(option, REP_ERR_INVALID, "a query past the option's end");
                return;
            }
            long length = Integer.toUnsignedLong(data.getInt());
            if (length > data.remaining()) {
                error(option, REP_ERR_INVALID, "a query past the option's end");
                return;
            }
            asked.add(string(data, (int) length));
        }
        if (data.hasRemaining()) {
            error(option, REP_ERR_INVALID, data.remaining() + " bytes after the queries");
            return;
        }
        boolean allocation = asked.contains(BASE_ALLOCATION)
                || option == OPT_LIST_META_CONTEXT && (asked.isEmpty() || asked.contains("base:"));
        if (option == OPT_SET_META_CONTEXT) {
            allocationContext = asked.contains(BASE_ALLOCATION);
        }
        if (allocation) {
            byte[] b = BASE_ALLOCATION.getBytes(StandardCharsets.US_ASCII);
            reply(option, REP_META_CONTEXT, ByteBuffer.allocate(4 + b.length).putInt(CONTEXT_ID).put(b).flip());
        }
        reply(option, REP_ACK, ByteBuffer.allocate(0));
    }

    private void reply(int option, int type, ByteBuffer data) throws IOException {
        ByteBuffer h = ByteBuffer.allocate(20 + data.remaining());
        h.putLong(OPT_REPLY_MAGIC).putInt(option).putInt(type).putInt(data.remaining()).put(data);
        send(h.flip());
    }

    private void error(int option, int type, String message) throws IOException {
        log.info("nbd client={} option={} refused: {}", peer, option, message);
        byte[] b = message.getBytes(StandardCharsets.UTF_8);
        reply(option, type, ByteBuffer.wrap(b));
    }

    // ---- transmission ------------------------------------------------------------------------

    private void transmission() throws IOException, Broken {
        log.info("nbd client={} export={} open structured={} base_allocation={}", peer, exportName, structured,
                allocationContext);
        ByteBuffer header = ByteBuffer.allocate(28);
        while (true) {
            header.clear();
            fill(header);
            header.flip();
            int magic = header.getInt();
            if (magic != REQUEST_MAGIC) {
                throw new Broken("a request without its magic (" + Integer.toHexString(magic) + ")");
            }
            int flags = Short.toUnsignedInt(header.getShort());
            int type = Short.toUnsignedInt(header.getShort());
            long cookie = header.getLong();
            long offset = header.getLong();
            long length = Integer.toUnsignedLong(header.getInt());
            if (type == CMD_DISC) {
                log.info("nbd client={} export={} disconnects", peer, exportName);
                return;
            }
            if (type == CMD_WRITE && length > MAX_PAYLOAD) {
                throw new Broken("a write of " + length + " bytes, at most " + MAX_PAYLOAD);
            }
            try {
                if (type == CMD_WRITE) {
                    write(flags, cookie, offset, length);
                } else {
                    serve(type, flags, cookie, offset, length);
                }
            } catch (ExportException e) {
                int err = replyError(e.errno());
                if (e.errno() == EINVAL) { // the client's own mistake: answered; logged where one looks for it
                    log.debug("nbd client={} export={} command={} offset={} length={} errno={} {}", peer, exportName,
                            type, offset, length, e.errno(), e.getMessage());
                } else {
                    log.warn("nbd client={} export={} command={} offset={} length={} errno={} {}", peer, exportName,
                            type, offset, length, e.errno(), e.getMessage());
                }
                if (structured && (type == CMD_READ || type == CMD_BLOCK_STATUS)) {
                    byte[] m = e.getMessage() == null ? new byte[0] : e.getMessage().getBytes(StandardCharsets.UTF_8);
                    int n = Math.min(m.length, 4096);
                    chunk(cookie, REPLY_FLAG_DONE, REPLY_TYPE_ERROR,
                            ByteBuffer.allocate(6 + n).putInt(err).putShort((short) n).put(m, 0, n).flip());
                } else {
                    simple(cookie, err);
                }
            }
        }
    }

    /** EINVAL (ENOSPC for what writes) unless {@code [offset, offset + length)} is inside the export. */
    private void checkRange(int type, long offset, long length) throws ExportException {
        long size = export.size();
        if (offset < 0 || offset > size || length > size - offset) {
            throw new ExportException(type == CMD_WRITE || type == CMD_WRITE_ZEROES ? ENOSPC : EINVAL,
                    "past the export's end (" + size + " bytes)");
        }
    }

    /**
     * A write: its payload taken a CHUNK at a time and written as it comes; a failure (or a
     * range past the end) still reads the payload to its end, so the next request is where the
     * client put it, then answers the error.
     */
    private void write(int flags, long cookie, long offset, long length) throws IOException, ExportException {
        ExportException failure = null;
        try {
            checkRange(CMD_WRITE, offset, length);
        } catch (ExportException e) {
            failure = e;
        }
        long done = 0;
        while (done < length) {
            int n = (int) Math.min(CHUNK, length - done);
            ByteBuffer b = buffer(n);
            fill(b);
            b.flip();
            if (failure == null) {
                try {
                    export.write(offset + done, b);
                } catch (ExportException e) {
                    failure = e;
                }
            }
            done += n;
        }
        if (failure != null) {
            throw failure;
        }
        if ((flags & CMD_FLAG_FUA) != 0) {
            export.flush();
        }
        simple(cookie, 0);
    }

    /**
     * A read, sent a CHUNK at a time: structured, as OFFSET_DATA chunks (a failure after the first
     * is an ERROR chunk); simple, the reply's header goes with the first CHUNK, so a failure after
     * it can only end the connection.
     */
    private void read(long cookie, long offset, long length) throws IOException, ExportException, Broken {
        if (length > MAX_PAYLOAD) {
            throw new ExportException(EINVAL, "a read of " + length + " bytes, at most " + MAX_PAYLOAD);
        }
        long done = 0;
        do {
            int n = (int) Math.min(CHUNK, length - done);
            ByteBuffer b = buffer(n);
            try {
                export.read(offset + done, b);
            } catch (ExportException e) {
                if (done == 0) {
                    throw e; // nothing sent: answered as any failure
                }
                if (!structured) {
                    throw new Broken("a read failed after its first " + done + " bytes were sent: " + e.getMessage());
                }
                log.warn("nbd client={} export={} read offset={} failed after {} bytes: {}", peer, exportName, offset,
                        done, e.getMessage());
                byte[] m = String.valueOf(e.getMessage()).getBytes(StandardCharsets.UTF_8);
                int k = Math.min(m.length, 4096);
                chunk(cookie, REPLY_FLAG_DONE, REPLY_TYPE_ERROR,
                        ByteBuffer.allocate(6 + k).putInt(replyError(e.errno())).putShort((short) k).put(m, 0, k).flip());
                return;
            }
            b.flip();
            boolean last = done + n == length;
            if (structured) {
                ByteBuffer h = ByteBuffer.allocate(28);
                h.putInt(STRUCTURED_REPLY_MAGIC).putShort((short) (last ? REPLY_FLAG_DONE : 0))
                        .putShort((short) REPLY_TYPE_OFFSET_DATA).putLong(cookie).putInt(8 + n).putLong(offset + done);
                send(h.flip(), b);
            } else if (done == 0) {
                send(simpleHeader(cookie, 0), b);
            } else {
                send(b);
            }
            done += n;
        } while (done < length);
    }

    private void serve(int type, int flags, long cookie, long offset, long length)
            throws IOException, ExportException, Broken {
        if (type == CMD_READ || type == CMD_TRIM || type == CMD_WRITE_ZEROES || type == CMD_CACHE
                || type == CMD_BLOCK_STATUS) {
            checkRange(type, offset, length);
            if (length == 0 && type != CMD_CACHE) {
                throw new ExportException(EINVAL, "a request of 0 bytes");
            }
        }
        switch (type) {
            case CMD_READ -> read(cookie, offset, length);
            case CMD_FLUSH -> {
                export.flush();
                simple(cookie, 0);
            }
            case CMD_TRIM -> {
                export.trim(offset, length);
                if ((flags & CMD_FLAG_FUA) != 0) {
                    export.flush();
                }
                simple(cookie, 0);
            }
            case CMD_WRITE_ZEROES -> {
                export.zero(offset, length, (flags & CMD_FLAG_NO_HOLE) != 0);
                if ((flags & CMD_FLAG_FUA) != 0) {
                    export.flush();
                }
                simple(cookie, 0);
            }
            case CMD_CACHE -> simple(cookie, 0); // the page cache is the backing file's own
            case CMD_BLOCK_STATUS -> blockStatus(flags, cookie, offset, length);
            default -> throw new ExportException(EINVAL, "unknown command " + type);
        }
    }

    private void blockStatus(int flags, long cookie, long offset, long length) throws IOException, ExportException {
        if (!structured || !allocationContext) {
            throw new ExportException(EINVAL, "BLOCK_STATUS without base:allocation negotiated");
        }
        if (length == 0) {
            throw new ExportException(EINVAL, "BLOCK_STATUS of 0 bytes");
        }
        List<Export.Extent> extents = export.extents(offset, length);
        if (extents.isEmpty()) {
            throw new ExportException(EIO, "the export described none of " + offset + "+" + length);
        }
        int n = (flags & CMD_FLAG_REQ_ONE) != 0 ? 1 : Math.min(extents.size(), 1024);
        ByteBuffer b = ByteBuffer.allocate(4 + 8 * n).putInt(CONTEXT_ID);
        long left = length;
        for (int i = 0; i < n && left > 0; i++) {
            Export.Extent e = extents.get(i);
            long len = Math.min(e.length(), left);
            b.putInt((int) len).putInt(e.hole() ? STATE_HOLE | STATE_ZERO : 0);
            left -= len;
        }
        chunk(cookie, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, b.flip());
    }

    private ByteBuffer simpleHeader(long cookie, int error) {
        return ByteBuffer.allocate(16).putInt(SIMPLE_REPLY_MAGIC).putInt(error).putLong(cookie).flip();
    }

    private void simple(long cookie, int error) throws IOException {
        send(simpleHeader(cookie, error));
    }

    private void chunk(long cookie, int flags, int type, ByteBuffer payload) throws IOException {
        ByteBuffer h = ByteBuffer.allocate(20);
        h.putInt(STRUCTURED_REPLY_MAGIC).putShort((short) flags).putShort((short) type).putLong(cookie)
                .putInt(payload.remaining());
        send(h.flip(), payload);
    }

    // ---- bytes --------------------------------------------------------------------------------

    /** The connection's buffer, grown (up to CHUNK) for {@code n} bytes, cleared and limited to them. */
    private ByteBuffer buffer(int n) {
        if (payload.capacity() < n) {
            payload = ByteBuffer.allocateDirect(Math.max(n, Math.min(CHUNK, 2 * payload.capacity())));
        }
        return payload.clear().limit(n);
    }

    /** {@code n} bytes (at most MAX_OPTION) of the handshake. */
    private ByteBuffer read(int n) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(n);
        fill(b);
        return b.flip();
    }

    private void fill(ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            if (ch.read(b) < 0) {
                throw new EOFException();
            }
        }
    }

    private int readInt() throws IOException {
        return read(4).getInt();
    }

    private long readLong() throws IOException {
        return read(8).getLong();
    }

    private void send(ByteBuffer... bs) throws IOException {
        long left = 0;
        for (ByteBuffer b : bs) {
            left += b.remaining();
        }
        while (left > 0) {
            left -= ch.write(bs);
        }
    }

    private static String string(ByteBuffer data, int n) {
        byte[] b = new byte[n];
        data.get(b);
        return new String(b, StandardCharsets.UTF_8);
    }
}
