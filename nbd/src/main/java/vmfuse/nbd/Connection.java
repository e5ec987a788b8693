package vmfuse.nbd;

import static vmfuse.nbd.Nbd.*;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/*
 * One client of the server, from the handshake to its disconnect: the fixed newstyle handshake
 * (doc/proto.md) on the connection's thread, then its requests, read on that thread, done by the
 * server's {@link Scheduler} (many in flight: a client may send its next before the last is
 * answered) and answered in the order they are done: at once by the thread that did the work if
 * the socket takes the reply, else by a sender thread of the connection's own. The socket, and TLS
 * on it, are its {@link Transport}'s.
 *
 *   handshake     S: NBDMAGIC IHAVEOPT flags(FIXED_NEWSTYLE|NO_ZEROES)   C: flags
 *   options       C: IHAVEOPT option length data   S: replies (OPT_REPLY_MAGIC option type length data)
 *                 STARTTLS (on TCP: required first, else ERR_TLS_REQD), LIST, INFO, GO, EXPORT_NAME,
 *                 ABORT, STRUCTURED_REPLY, LIST/SET_META_CONTEXT (base:allocation); any other:
 *                 ERR_UNSUP, and the next option is read
 *   transmission  C: REQUEST_MAGIC flags type cookie offset length [data]
 *                 S: a simple reply (and data), or structured chunks (READ, BLOCK_STATUS, errors)
 *
 * Bounds, whatever a client sends: an option's data at most MAX_OPTION bytes, a request's payload
 * at most MAX_PAYLOAD (INFO_BLOCK_SIZE says so); past either the connection is closed, with a log
 * line, without reading what was announced. At most MAX_IN_FLIGHT requests and ACCOUNT bytes of
 * their data wait per connection (past them, the client's next request is not read until one is
 * done), and the server's {@link Buffers} bound all connections together. A client that takes
 * too long over its handshake, or leaves a reply unread too long, is hung up on by the server's
 * watchdog ({@link #handshakeSince}, {@link #sendingSince}).
 */
final class Connection implements Runnable {
    private static final Logger log = LoggerFactory.getLogger(Connection.class);
    static final int MAX_OPTION = 64 * 1024;
    static final int MAX_PAYLOAD = 32 << 20;
    static final int MAX_IN_FLIGHT = 64;
    static final long ACCOUNT = 8 << 20;
    private static final int PREFERRED_BLOCK = 4096;
    private static final int IN_BUFFER = 64 * 1024;
    /** Options answered ERR_TLS_REQD before a client that must use TLS is hung up on. */
    static final int MAX_OPTIONS_BEFORE_TLS = 4;
    private static final int CONTEXT_ID = 1;

    private final SocketChannel ch;
    private final Exports exports;
    private volatile Peer peer;
    /** Keys for TLS, which this listener requires (TCP); null: no TLS here (the unix socket). */
    private final TlsPsk tlsPsk;
    /** The socket, non-blocking, with TLS once STARTTLS is done; null until run() makes it. */
    private volatile Transport transport;
    /** Once TLS is on: why the server will not take this identity's client (its clients are many), or null. */
    private final java.util.function.Function<Connection, String> admitTls;
    private final Scheduler scheduler;
    private final Buffers buffers;
    /** How long this reading thread busy-polls the socket before it sleeps on it. */
    private final Polling.Window window;
    /**
     * How long this client's requests of each {@link Scheduler.Kind} took to be done, lately, in
     * nanoseconds (each new one weighs an eighth; updated by whichever thread did it, so an
     * update may be lost, which only delays the average): a kind that took less than
     * {@code quickNanos} is done on the reading thread (see {@link NbdServer.Limits#DEFAULT_QUICK}).
     */
    private final AtomicLongArray serviceNanos;
    private final long quickNanos;
    /** What the client sent and was not yet taken: several requests' headers come in one read. */
    private final ByteBuffer in = ByteBuffer.allocateDirect(IN_BUFFER).flip();
    /** Whether the socket was left empty by the last read: the next waits for it before reading. */
    private boolean drained;
    private final ReentrantLock out = new ReentrantLock();
    private final Condition outPending = out.newCondition();
    /** Signalled as the sender takes a reply off {@code pending} (or drops them all). */
    private final Condition outTaken = out.newCondition();
    /**
     * The reading thread (set once transmission begins): a reply it queues itself, to a request it
     * refused or did whole (a large one), waits while MAX_IN_FLIGHT replies are unsent (see
     * {@link #reply}).
     */
    private volatile Thread reader;
    /** Replies the socket did not take at once, for the sender thread. Guarded by out. */
    private final ArrayDeque<Reply> pending = new ArrayDeque<>();
    private boolean ending; // guarded by out
    private boolean noZeroes;
    private int beforeTls;
    private boolean structured;
    private boolean allocationContext;
    private Export export;
    private volatile String exportName;
    /** The export's size as the client was told it: requests are checked against it. */
    private long exportSize;
    private Scheduler.Share share;
    private Buffers.Account account;
    private int inFlight; // guarded by this
    private volatile boolean dead;
    private volatile long handshakeSince = System.nanoTime();
    private volatile long sendingSince;
    private volatile long payloadSince;

    /** Closed by the server at its end ({@link #closeChannel}): the connection stops at its next read. */
    Connection(SocketChannel ch, Exports exports, Peer peer, Scheduler scheduler, Buffers buffers, Polling polling,
            long quickNanos, TlsPsk tlsPsk, java.util.function.Function<Connection, String> admitTls) {
        this.window = polling.window();
        this.quickNanos = quickNanos;
        this.serviceNanos = notQuickUntilSeen(quickNanos);
        this.tlsPsk = tlsPsk;
        this.admitTls = admitTls;
        this.ch = ch;
        this.exports = exports;
        this.peer = peer;
        this.scheduler = scheduler;
        this.buffers = buffers;
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
            transport = Transport.open(ch);
            if (dead) { // closed by the server before the selectors were there to wake
                throw new ClosedChannelException();
            }
            if (handshake()) {
                transmission();
            }
        } catch (Broken e) {
            log.warn("nbd client={} export={} closed: {}", peer, exportName, e.getMessage());
        } catch (EOFException e) {
            log.debug("nbd client={} export={} hung up", peer, exportName);
        } catch (IOException e) {
            log.debug("nbd client={} export={} gone: {}", peer, exportName, e.toString());
        } catch (InterruptedException e) {
            log.debug("nbd client={} export={} interrupted", peer, exportName);
            Thread.currentThread().interrupt();
        } catch (RuntimeException e) {
            log.error("nbd client={} export={} failed unexpectedly", peer, exportName, e);
        } finally {
            if (export != null) {
                export.close();
            }
            Transport t = transport;
            if (t != null && !dead) {
                t.closeTls(peer.toString()); // close_notify, as far as the socket takes it now
            }
            closeChannel();
            if (t != null) {
                t.release();
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
            if (tlsPsk != null && !transport.tls() && option != OPT_STARTTLS && option != OPT_ABORT) {
                if (option == OPT_EXPORT_NAME) { // it cannot be answered with an error: hung up on
                    throw new Broken("EXPORT_NAME before STARTTLS, where TLS is required");
                }
                if (++beforeTls > MAX_OPTIONS_BEFORE_TLS) {
                    throw new Broken(MAX_OPTIONS_BEFORE_TLS + " options without STARTTLS, where TLS is required");
                }
                error(option, REP_ERR_TLS_REQD, "TLS is required here: NBD_OPT_STARTTLS first");
                continue;
            }
            switch (option) {
                case OPT_STARTTLS -> startTls(option, data);
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
                    optionReply(option, REP_ACK, ByteBuffer.allocate(0));
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
                        optionReply(option, REP_ACK, ByteBuffer.allocate(0));
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
        for (String name : exports.names(peer)) {
            byte[] b = name.getBytes(StandardCharsets.UTF_8);
            optionReply(option, REP_SERVER, ByteBuffer.allocate(4 + b.length).putInt(b.length).put(b).flip());
        }
        optionReply(option, REP_ACK, ByteBuffer.allocate(0));
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
        optionReply(option, REP_INFO, ByteBuffer.allocate(12).putShort((short) INFO_EXPORT).putLong(size())
                .putShort((short) transmissionFlags()).flip());
        if (blockSize) {
            optionReply(option, REP_INFO, ByteBuffer.allocate(14).putShort((short) INFO_BLOCK_SIZE).putInt(1)
                    .putInt(PREFERRED_BLOCK).putInt(MAX_PAYLOAD).flip());
        }
        optionReply(option, REP_ACK, ByteBuffer.allocate(0));
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
            e = exports.open(peer, name);
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
        if (!exports.visible(peer, name)) {
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
            optionReply(option, REP_META_CONTEXT, ByteBuffer.allocate(4 + b.length).putInt(CONTEXT_ID).put(b).flip());
        }
        optionReply(option, REP_ACK, ByteBuffer.allocate(0));
    }

    private void optionReply(int option, int type, ByteBuffer data) throws IOException {
        ByteBuffer h = ByteBuffer.allocate(20 + data.remaining());
        h.putLong(OPT_REPLY_MAGIC).putInt(option).putInt(type).putInt(data.remaining()).put(data);
        send(h.flip());
    }

    private void error(int option, int type, String message) throws IOException {
        if (type == REP_ERR_TLS_REQD) { // anyone may ask before TLS: not for the log's default level
            log.debug("nbd client={} option={} refused: {}", peer, option, message);
        } else {
            log.info("nbd client={} option={} refused: {}", peer, option, message);
        }
        byte[] b = message.getBytes(StandardCharsets.UTF_8);
        optionReply(option, type, ByteBuffer.wrap(b));
    }

    // ---- transmission ------------------------------------------------------------------------

    /**
     * Requests are read here, on the connection's thread, and done by the scheduler's workers in
     * the order it decides (or here, through the scheduler, when one is alone or of a kind seen
     * to be quick and nothing waits: see {@link #serviceNanos}); their replies go out in the order they are done, through the
     * connection's sender thread, so a client that does not read its replies holds up no worker.
     * A request of more than {@link Buffers#MAX} bytes is done here, a piece at a time (each piece
     * still scheduled), so no more than one piece of it waits in memory.
     */
    private void transmission() throws IOException, Broken, InterruptedException {
        log.info("nbd client={} export={} open structured={} base_allocation={}", peer, exportName, structured,
                allocationContext);
        handshakeSince = 0;
        if (!exports.visible(peer, exportName)) { // its export went while it was in its handshake
            throw new Broken("export " + exportName + " is no longer this client's");
        }
        exportSize = size();
        share = scheduler.share(exports.share(exportName));
        account = buffers.account(ACCOUNT, peer.tenant());
        reader = Thread.currentThread();
        Thread sender = new Thread(this::sendReplies, Thread.currentThread().getName() + "-send");
        sender.setDaemon(true);
        sender.start();
        try {
            ByteBuffer header = ByteBuffer.allocate(28);
            while (!dead) {
                header.clear();
                fill(header, true);
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
                request(new Request(type, flags, cookie, offset, length));
            }
        } finally {
            // what was read is done and answered (a client may shut down its side and read on),
            // unless the connection was closed: then nothing queued is done, and nothing sent
            awaitIdle();
            endReplies();
            sender.join(); // bounded: the watchdog hangs up on a client that does not read them
            share.release();
        }
    }

    /** A request as it came; {@code kind} is its class in the scheduler. */
    private record Request(int type, int flags, long cookie, long offset, long length) {
        Scheduler.Kind kind() {
            return switch (type) {
                case CMD_WRITE -> (flags & CMD_FLAG_FUA) != 0 ? Scheduler.Kind.FLUSH : Scheduler.Kind.WRITE;
                case CMD_FLUSH -> Scheduler.Kind.FLUSH;
                case CMD_TRIM, CMD_WRITE_ZEROES -> Scheduler.Kind.TRIM;
                default -> Scheduler.Kind.READ;
            };
        }

        /**
         * What it moves, as the scheduler's weights count it beyond the request itself: a read's
         * or a write's length, zeroes that keep their space written in full, a punch up to 1 MiB.
         */
        long bytes() {
            return switch (type) {
                case CMD_READ, CMD_WRITE -> length;
                case CMD_WRITE_ZEROES -> (flags & CMD_FLAG_NO_HOLE) != 0 ? length : Math.min(length, 1 << 20);
                case CMD_TRIM -> Math.min(length, 1 << 20);
                default -> 0;
            };
        }
    }

    private void request(Request r) throws IOException, Broken, InterruptedException {
        scheduler.cpu().doing(r.kind().copied(r.bytes())); // its payload is copied here, or its work done here
        if (r.type() == CMD_WRITE && r.length() > Buffers.MAX) {
            largeWrite(r);
            return;
        }
        if (r.type() == CMD_READ && r.length() > Buffers.MAX) {
            largeRead(r);
            return;
        }
        ByteBuffer b = null;
        if (r.type() == CMD_WRITE) {
            b = account.take((int) r.length());
            try {
                payloadSince = System.nanoTime();
                fill(b, false);
            } catch (IOException e) {
                account.give(b);
                throw e;
            } finally {
                payloadSince = 0;
            }
            b.flip();
        } else if (r.type() == CMD_READ) {
            b = account.take((int) r.length());
        }
        ByteBuffer data = b;
        // a request is in flight until its reply is sent (or dropped): that bounds what waits for
        // a client that does not read, whatever the replies hold
        Runnable finish = () -> {
            if (data != null) {
                account.give(data);
            }
            end();
        };
        Runnable work = () -> {
            if (dead) { // hung up on: nothing queued is done
                finish.run();
                return;
            }
            long began = System.nanoTime();
            try {
                check(r);
                if (r.type() == CMD_WRITE) {
                    export.write(r.offset(), data);
                    if ((r.flags() & CMD_FLAG_FUA) != 0) {
                        export.flush();
                    }
                    took(r.kind(), began);
                    simple(r.cookie(), 0, finish);
                } else if (r.type() == CMD_READ) {
                    export.read(r.offset(), data);
                    took(r.kind(), began);
                    data.flip();
                    ByteBuffer[] reply = structured
                            ? new ByteBuffer[] {dataChunkHeader(r.cookie(), true, r.offset(), data.remaining()), data}
                            : new ByteBuffer[] {simpleHeader(r.cookie(), 0), data};
                    reply(new Reply(reply, finish));
                } else {
                    serve(r, finish);
                    took(r.kind(), began);
                }
            } catch (ExportException e) {
                failed(r, e, finish);
            } catch (RuntimeException | Error e) { // a bug below: the client still gets its answer
                log.error("nbd client={} export={} command={} failed unexpectedly", peer, exportName, r.type(), e);
                failed(r, new ExportException(EIO, "failed unexpectedly: " + e), finish);
            }
        };
        // a request alone (none of this client's in flight, no other read and waiting), or one of
        // a quick kind, is done here if the scheduler has room: no hand-over to pay for
        boolean alone = begin() == 1 && !in.hasRemaining();
        boolean here = alone || serviceNanos.get(r.kind().ordinal()) < quickNanos;
        if (!(here && share.runNow(r.kind(), r.bytes(), work))) {
            try {
                share.submit(r.kind(), r.bytes(), work);
            } catch (RuntimeException e) { // the scheduler closed under a connection the server missed
                finish.run();
                throw e;
            }
        }
    }

    /** No kind is quick until a request of it was seen to be: the first go to workers, side by side. */
    private static AtomicLongArray notQuickUntilSeen(long quickNanos) {
        AtomicLongArray a = new AtomicLongArray(Scheduler.Kind.values().length);
        for (int i = 0; i < a.length(); i++) {
            a.set(i, quickNanos);
        }
        return a;
    }

    /** A request of {@code kind} begun at {@code began} (System.nanoTime) is done: into its kind's average. */
    private void took(Scheduler.Kind kind, long began) {
        int k = kind.ordinal();
        long last = serviceNanos.get(k);
        long took = System.nanoTime() - began;
        serviceNanos.set(k, last + (took - last) / 8);
        window.done(took);
    }

    /**
     * EINVAL (ENOSPC for what writes) unless the request is inside the export as its size was
     * told; EINVAL for 0 bytes. (An image truncated under its client reads as zeros past its new
     * end, as a file does.)
     */
    private void check(Request r) throws ExportException {
        int type = r.type();
        if (type == CMD_READ || type == CMD_WRITE || type == CMD_TRIM || type == CMD_WRITE_ZEROES || type == CMD_CACHE
                || type == CMD_BLOCK_STATUS) {
            long size = exportSize;
            if (r.offset() < 0 || r.offset() > size || r.length() > size - r.offset()) {
                throw new ExportException(type == CMD_WRITE || type == CMD_WRITE_ZEROES ? ENOSPC : EINVAL,
                        "past the export's end (" + size + " bytes)");
            }
            if (r.length() == 0 && type != CMD_CACHE && type != CMD_WRITE) {
                throw new ExportException(EINVAL, "a request of 0 bytes");
            }
        }
    }

    /** Answers a failed request: the client's own mistakes (EINVAL) logged at debug, the disk's at warn. */
    private void failed(Request r, ExportException e) {
        failed(r, e, null);
    }

    private void failed(Request r, ExportException e, Runnable after) {
        int err = replyError(e.errno());
        if (e.errno() == EINVAL) {
            log.debug("nbd client={} export={} command={} offset={} length={} errno={} {}", peer, exportName, r.type(),
                    r.offset(), r.length(), e.errno(), e.getMessage());
        } else {
            log.warn("nbd client={} export={} command={} offset={} length={} errno={} {}", peer, exportName, r.type(),
                    r.offset(), r.length(), e.errno(), e.getMessage());
        }
        if (structured && (r.type() == CMD_READ || r.type() == CMD_BLOCK_STATUS)) {
            errorChunk(r.cookie(), err, e.getMessage(), after);
        } else {
            simple(r.cookie(), err, after);
        }
    }

    /** The request done now, by the scheduler, from this thread: null if it succeeded, else why not. */
    private ExportException call(Request r, long bytes, ExportOp op) throws InterruptedException {
        CompletableFuture<ExportException> done = new CompletableFuture<>();
        share.submit(r.kind(), bytes, () -> {
            try {
                op.run();
                done.complete(null);
            } catch (ExportException e) {
                done.complete(e);
            } catch (RuntimeException | Error e) {
                done.completeExceptionally(e);
                throw e;
            }
        });
        try {
            return done.get();
        } catch (ExecutionException e) {
            throw new IllegalStateException("a request failed unexpectedly", e.getCause());
        }
    }

    @FunctionalInterface
    private interface ExportOp {
        void run() throws ExportException;
    }

    /**
     * A write of more than one buffer: its payload taken a buffer at a time and written as it
     * comes; a failure (or a range past the end) still reads the payload to its end, so the next
     * request is where the client put it, then answers the error.
     */
    private void largeWrite(Request r) throws IOException, InterruptedException {
        ExportException failure = null;
        try {
            check(r);
        } catch (ExportException e) {
            failure = e;
        }
        ByteBuffer b = account.take(Buffers.MAX);
        try {
            long done = 0;
            long waited = 0; // on the client, over the whole payload: the watchdog's clock stops while a piece is written
            while (done < r.length()) {
                int n = (int) Math.min(Buffers.MAX, r.length() - done);
                b.clear().limit(n);
                payloadSince = System.nanoTime() - waited;
                fill(b, false);
                waited = System.nanoTime() - payloadSince;
                payloadSince = 0;
                b.flip();
                if (failure == null) {
                    long at = r.offset() + done;
                    failure = call(r, n, () -> export.write(at, b));
                }
                done += n;
            }
            if (failure == null && (r.flags() & CMD_FLAG_FUA) != 0) {
                failure = call(r, 0, export::flush);
            }
        } finally {
            payloadSince = 0;
            account.give(b);
        }
        if (failure != null) {
            failed(r, failure);
        } else {
            simple(r.cookie(), 0);
        }
    }

    /**
     * A read of more than one buffer, read and sent a buffer at a time: structured, as
     * OFFSET_DATA chunks (a failure after the first is an ERROR chunk); simple, as one reply whose
     * header goes with the first piece, so nothing else may be sent between its pieces (the
     * requests before it are answered first) and a failure after the first piece can only end the
     * connection.
     */
    private void largeRead(Request r) throws IOException, Broken, InterruptedException {
        try {
            check(r);
            if (r.length() > MAX_PAYLOAD) {
                throw new ExportException(EINVAL, "a read of " + r.length() + " bytes, at most " + MAX_PAYLOAD);
            }
            if (structured && (r.flags() & CMD_FLAG_DF) != 0) { // it would come in pieces
                throw new ExportException(EOVERFLOW, "a read of " + r.length() + " bytes not in pieces, at most "
                        + Buffers.MAX);
            }
        } catch (ExportException e) {
            failed(r, e);
            return;
        }
        if (!structured) {
            awaitIdle(); // this thread alone answers until the reply's last piece is queued
        }
        long done = 0;
        while (done < r.length()) {
            int n = (int) Math.min(Buffers.MAX, r.length() - done);
            ByteBuffer b = account.take(n);
            long at = r.offset() + done;
            ExportException failure;
            try {
                failure = call(r, n, () -> export.read(at, b));
            } catch (RuntimeException | InterruptedException e) {
                account.give(b);
                throw e;
            }
            if (failure != null) {
                account.give(b);
                if (done == 0) {
                    failed(r, failure);
                    return;
                }
                if (!structured) {
                    throw new Broken("a read failed after its first " + done + " bytes were sent: "
                            + failure.getMessage());
                }
                log.warn("nbd client={} export={} read offset={} failed after {} bytes: {}", peer, exportName,
                        r.offset(), done, failure.getMessage());
                errorChunk(r.cookie(), replyError(failure.errno()), failure.getMessage(), null);
                return;
            }
            b.flip();
            boolean last = done + n == r.length();
            ByteBuffer[] reply = structured ? new ByteBuffer[] {dataChunkHeader(r.cookie(), last, at, n), b}
                    : done == 0 ? new ByteBuffer[] {simpleHeader(r.cookie(), 0), b} : new ByteBuffer[] {b};
            reply(new Reply(reply, () -> account.give(b)));
            done += n;
        }
    }

    /** FLUSH, TRIM, WRITE_ZEROES, CACHE, BLOCK_STATUS and what is not a command; {@code after} once answered. */
    private void serve(Request r, Runnable after) throws ExportException {
        switch (r.type()) {
            case CMD_FLUSH -> export.flush();
            case CMD_TRIM -> {
                export.trim(r.offset(), r.length());
                if ((r.flags() & CMD_FLAG_FUA) != 0) {
                    export.flush();
                }
            }
            case CMD_WRITE_ZEROES -> {
                export.zero(r.offset(), r.length(), (r.flags() & CMD_FLAG_NO_HOLE) != 0);
                if ((r.flags() & CMD_FLAG_FUA) != 0) {
                    export.flush();
                }
            }
            case CMD_CACHE -> {
                // the page cache is the backing file's own
            }
            case CMD_BLOCK_STATUS -> {
                blockStatus(r, after);
                return;
            }
            default -> throw new ExportException(EINVAL, "unknown command " + r.type());
        }
        simple(r.cookie(), 0, after);
    }

    private void blockStatus(Request r, Runnable after) throws ExportException {
        if (!structured || !allocationContext) {
            throw new ExportException(EINVAL, "BLOCK_STATUS without base:allocation negotiated");
        }
        List<Export.Extent> extents = export.extents(r.offset(), r.length());
        if (extents.isEmpty()) {
            throw new ExportException(EIO, "the export described none of " + r.offset() + "+" + r.length());
        }
        int n = (r.flags() & CMD_FLAG_REQ_ONE) != 0 ? 1 : Math.min(extents.size(), 1024);
        ByteBuffer b = ByteBuffer.allocate(4 + 8 * n).putInt(CONTEXT_ID);
        long left = r.length();
        for (int i = 0; i < n && left > 0; i++) {
            Export.Extent e = extents.get(i);
            long len = Math.min(e.length(), left);
            b.putInt((int) len).putInt(e.hole() ? STATE_HOLE | STATE_ZERO : 0);
            left -= len;
        }
        chunk(r.cookie(), REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, b.flip(), after);
    }

    private static ByteBuffer simpleHeader(long cookie, int error) {
        return ByteBuffer.allocate(16).putInt(SIMPLE_REPLY_MAGIC).putInt(error).putLong(cookie).flip();
    }

    private static ByteBuffer dataChunkHeader(long cookie, boolean last, long offset, int n) {
        return ByteBuffer.allocate(28).putInt(STRUCTURED_REPLY_MAGIC).putShort((short) (last ? REPLY_FLAG_DONE : 0))
                .putShort((short) REPLY_TYPE_OFFSET_DATA).putLong(cookie).putInt(8 + n).putLong(offset).flip();
    }

    private void simple(long cookie, int error) {
        simple(cookie, error, null);
    }

    private void simple(long cookie, int error, Runnable after) {
        reply(new Reply(new ByteBuffer[] {simpleHeader(cookie, error)}, after));
    }

    private void chunk(long cookie, int flags, int type, ByteBuffer payload, Runnable after) {
        ByteBuffer h = ByteBuffer.allocate(20);
        h.putInt(STRUCTURED_REPLY_MAGIC).putShort((short) flags).putShort((short) type).putLong(cookie)
                .putInt(payload.remaining());
        reply(new Reply(new ByteBuffer[] {h.flip(), payload}, after));
    }

    private void errorChunk(long cookie, int err, String message, Runnable after) {
        byte[] m = String.valueOf(message).getBytes(StandardCharsets.UTF_8);
        int k = Math.min(m.length, 4096);
        chunk(cookie, REPLY_FLAG_DONE, REPLY_TYPE_ERROR,
                ByteBuffer.allocate(6 + k).putInt(err).putShort((short) k).put(m, 0, k).flip(), after);
    }

    // ---- requests in flight, and their replies --------------------------------------------------

    private synchronized int inFlight() {
        return inFlight;
    }

    /** Waits for room for one more request in flight (at most MAX_IN_FLIGHT); how many are, with it. */
    private synchronized int begin() throws InterruptedException {
        while (inFlight >= MAX_IN_FLIGHT) {
            wait();
        }
        return ++inFlight;
    }

    private synchronized void end() {
        inFlight--;
        notifyAll();
    }

    /** Waits until every request handed to the scheduler is done and its reply sent (or dropped). */
    private synchronized void awaitIdle() throws InterruptedException {
        while (inFlight > 0) {
            wait();
        }
    }

    /** What to send, in one write; {@code after} runs once it is sent (or dropped). */
    private record Reply(ByteBuffer[] data, Runnable after) {
        /** What it has left to send. */
        long bytes() {
            long n = 0;
            for (ByteBuffer b : data) {
                n += b.remaining();
            }
            return n;
        }

        boolean sent() {
            for (ByteBuffer b : data) {
                if (b.hasRemaining()) {
                    return false;
                }
            }
            return true;
        }

        void done() {
            if (after != null) {
                after.run();
            }
        }
    }

    /**
     * Sends {@code r} after the replies before it: at once, from the calling thread, if none waits
     * and the socket takes it all without waiting; what it does not take waits for the sender
     * thread. So no worker ever waits on a client that is slow to read.
     */
    private void reply(Reply r) {
        out.lock();
        try {
            boolean sent = false;
            if (!dead && pending.isEmpty()) {
                try {
                    while (writeSome(r.data()) > 0 && !r.sent()) {
                        // the socket takes more
                    }
                    sent = r.sent() && flushed();
                } catch (IOException e) {
                    lost(e);
                }
            }
            if (!dead && !sent) {
                // The reading thread waits for room: the replies it queues itself (to requests it
                // refused, as reads too large, or did whole) are counted in no request in flight,
                // and a client sending such requests without reading the answers grew `pending`
                // until the heap ran out, the whole daemon's (found by a review). A worker never
                // waits: its requests are in flight, at most MAX_IN_FLIGHT of them.
                while (Thread.currentThread() == reader && pending.size() >= MAX_IN_FLIGHT && !dead) {
                    try {
                        outTaken.await(1, TimeUnit.SECONDS); // the watchdog hangs up on a client that does not read
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        break;
                    }
                }
                if (!dead) {
                    pending.addLast(r);
                    outPending.signal();
                    return;
                }
            }
        } finally {
            out.unlock();
        }
        r.done();
    }

    /** The sender thread: the replies the socket did not take at once, in order, until the connection ends. */
    private void sendReplies() {
        while (true) {
            Reply r;
            out.lock();
            try {
                while (pending.isEmpty() && !ending) {
                    outPending.awaitUninterruptibly();
                }
                if (pending.isEmpty()) {
                    return;
                }
                r = pending.peekFirst();
            } finally {
                out.unlock();
            }
            try {
                sendingSince = System.nanoTime();
                scheduler.cpu().doing(r.bytes());
                while (!dead && !(r.sent() && flushed())) {
                    if (writeSome(r.data()) == 0 && !(r.sent() && flushed())) {
                        awaitWritable();
                    }
                }
            } catch (IOException e) {
                lost(e);
            } finally {
                sendingSince = 0;
            }
            List<Reply> dropped = new ArrayList<>();
            out.lock();
            try {
                pending.pollFirst();
                if (dead) {
                    dropped.addAll(pending);
                    pending.clear();
                }
                outTaken.signalAll();
            } finally {
                out.unlock();
            }
            r.done();
            dropped.forEach(Reply::done);
        }
    }

    /** The sender ends once what is pending is sent (or the connection is closed). */
    private void endReplies() {
        out.lock();
        try {
            ending = true;
            outPending.signal();
        } finally {
            out.unlock();
        }
    }

    /** The socket failed: the client is gone; nothing more is sent or done. */
    private void lost(IOException e) {
        if (!dead) {
            log.debug("nbd client={} export={} reply not sent: {}", peer, exportName, e.toString());
        }
        closeChannel();
    }

    /** Since when (System.nanoTime) the client has been in its handshake; 0 once it is done. */
    long handshakeSince() {
        return handshakeSince;
    }

    /** Since when (System.nanoTime) the client has been sending one request's data; 0 if it is not. */
    long payloadSince() {
        return payloadSince;
    }

    /** Since when (System.nanoTime) one reply has waited for the client to read it; 0 if none waits. */
    long sendingSince() {
        return sendingSince;
    }

    Peer peer() {
        return peer;
    }

    /** The host a TCP client connects from; "" on a unix socket. */
    String remoteHost() {
        return Transport.remoteHost(ch);
    }

    /** The export this client has open, once its handshake is done; null before. */
    String exportName() {
        return handshakeSince == 0 && !dead ? exportName : null;
    }

    /** Hangs up: the reader and the sender fail at their next call on the socket. */
    void closeChannel() {
        dead = true;
        handshakeSince = 0;
        Transport t = transport;
        if (t != null) {
            t.hangUp();
        } else {
            Transport.hangUp(ch);
        }
    }

    // ---- bytes --------------------------------------------------------------------------------

    /** {@code n} bytes (at most MAX_OPTION) of the handshake. */
    private ByteBuffer read(int n) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(n);
        fill(b, false);
        return b.flip();
    }

    /**
     * Fills {@code dst} from what the client sent: first what {@link #in} holds, then large
     * payloads straight from the socket, anything else through {@code in}, so several requests'
     * headers come in one call. {@code next}: {@code dst} is for the client's next request, so a
     * wait before any of it came is a wait between requests (see {@link Polling}).
     */
    private void fill(ByteBuffer dst, boolean next) throws IOException {
        while (dst.hasRemaining()) {
            if (in.hasRemaining()) {
                int k = Math.min(in.remaining(), dst.remaining());
                dst.put(in.slice(in.position(), k));
                in.position(in.position() + k);
                continue;
            }
            if (drained && !transport.tls()) { // the last read emptied the socket: wait for more before reading
                awaitReadable(next && dst.position() == 0);
                drained = false;
            }
            int n;
            int room;
            if (dst.remaining() >= in.capacity()) {
                room = dst.remaining();
                n = readSome(dst);
            } else {
                in.clear();
                room = in.remaining();
                n = readSome(in);
                in.flip();
            }
            if (n < 0) {
                throw new EOFException();
            }
            if (n == 0) {
                awaitReadable(next && dst.position() == 0);
            } else {
                drained = n < room; // a client that waits for its answers has sent nothing more
            }
        }
    }


    private int readInt() throws IOException {
        return read(4).getInt();
    }

    private long readLong() throws IOException {
        return read(8).getLong();
    }

    /** Sends all of {@code bs}, waiting for the socket as long as it takes (the watchdog bounds it). */
    private void send(ByteBuffer... bs) throws IOException {
        Reply r = new Reply(bs, null);
        while (!(r.sent() && flushed())) {
            if (writeSome(bs) == 0 && !(r.sent() && flushed())) {
                awaitWritable();
            }
        }
    }

    /**
     * Waits for the client to send more ({@code between}: its next request), polling first;
     * but not between requests while some of this client's are still being done: its next
     * request then comes when it has an answer, a disk's time away, and the CPUs are the workers'
     * (cold 4 KiB reads at depth 16 on 2 CPUs: 8 µs more CPU per request when this polled).
     */
    private void awaitReadable(boolean between) throws IOException {
        if (between && inFlight() > 0) {
            transport.awaitReadable();
            return;
        }
        window.await(transport::readableNow, transport::awaitReadable, between);
    }

    private int readSome(ByteBuffer dst) throws IOException {
        return transport.read(dst);
    }

    private long writeSome(ByteBuffer[] src) throws IOException {
        return transport.write(src);
    }

    private boolean flushed() throws IOException {
        return transport.flushed();
    }

    private void awaitWritable() throws IOException {
        transport.awaitWritable();
    }

    // ---- TLS ---------------------------------------------------------------------------------

    /**
     * STARTTLS: acknowledged in the clear, then the TLS handshake with the client's pre-shared
     * key; from here on everything goes through TLS, and the client is the tenant of the identity
     * it proved it holds the key of. ERR_UNSUP where no TLS is offered (the unix socket).
     */
    private void startTls(int option, ByteBuffer data) throws IOException, Broken {
        if (tlsPsk == null) {
            error(option, REP_ERR_UNSUP, "no TLS on this socket: its clients are told apart by their uid");
            return;
        }
        if (transport.tls() || data.hasRemaining()) {
            error(option, REP_ERR_INVALID, transport.tls() ? "TLS is on already" : "STARTTLS takes no data");
            return;
        }
        optionReply(option, REP_ACK, ByteBuffer.allocate(0));
        byte[] early = new byte[in.remaining()]; // what the client sent past STARTTLS is its TLS already
        in.get(early);
        String identity;
        try {
            identity = transport.startTls(tlsPsk, early);
        } catch (IOException e) {
            throw new Broken("TLS handshake failed: " + e.getMessage());
        }
        peer = peer.withTlsIdentity(identity);
        log.info("nbd client={} TLS on: identity {}", peer, identity);
        String refused = admitTls.apply(this);
        if (refused != null) {
            throw new Broken(refused);
        }
    }


    private static String string(ByteBuffer data, int n) {
        byte[] b = new byte[n];
        data.get(b);
        return new String(b, StandardCharsets.UTF_8);
    }
}
