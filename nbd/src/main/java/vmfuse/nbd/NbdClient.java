package vmfuse.nbd;

import static vmfuse.nbd.Nbd.*;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A minimal NBD client of the same protocol the server speaks (Nbd): the fixed newstyle
 * handshake with structured replies, one meta context, and BLOCK_STATUS, one request at a time.
 * The reclaimer asks QEMU's NBD server with it which ranges a dirty bitmap marks written (the
 * context "qemu:dirty-bitmap:NAME"); a test asks this module's server for base:allocation.
 */
public final class NbdClient implements AutoCloseable {
    private final SocketChannel ch;
    private final DataInputStream in;
    private final DataOutputStream out;
    private int contextId = -1;
    private long handle;

    private NbdClient(SocketChannel ch) {
        this.ch = ch;
        this.in = new DataInputStream(Channels.newInputStream(ch));
        this.out = new DataOutputStream(Channels.newOutputStream(ch));
    }

    /** Connects to {@code export} on the server at unix socket {@code socket}, with meta context {@code context}. */
    public static NbdClient connect(Path socket, String export, String context) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            ch.connect(UnixDomainSocketAddress.of(socket));
            NbdClient c = new NbdClient(ch);
            c.handshake(export, context);
            return c;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    private void handshake(String export, String context) throws IOException {
        if (in.readLong() != NBDMAGIC || in.readLong() != IHAVEOPT) {
            throw new IOException("not an NBD newstyle server");
        }
        int flags = in.readUnsignedShort();
        if ((flags & 1) == 0) {
            throw new IOException("NBD server without fixed newstyle");
        }
        out.writeInt(1 | 2); // FIXED_NEWSTYLE | NO_ZEROES
        option(OPT_STRUCTURED_REPLY, new byte[0]);
        expectAck(OPT_STRUCTURED_REPLY);

        byte[] name = export.getBytes(StandardCharsets.UTF_8);
        byte[] query = context.getBytes(StandardCharsets.UTF_8);
        java.io.ByteArrayOutputStream b = new java.io.ByteArrayOutputStream();
        DataOutputStream d = new DataOutputStream(b);
        d.writeInt(name.length);
        d.write(name);
        d.writeInt(1);
        d.writeInt(query.length);
        d.write(query);
        option(OPT_SET_META_CONTEXT, b.toByteArray());
        while (true) {
            int[] r = optReply(OPT_SET_META_CONTEXT);
            byte[] data = new byte[r[1]];
            in.readFully(data);
            if (r[0] == REP_META_CONTEXT) {
                contextId = ((data[0] & 0xff) << 24) | ((data[1] & 0xff) << 16) | ((data[2] & 0xff) << 8) | (data[3] & 0xff);
            } else if (r[0] == REP_ACK) {
                break;
            } else {
                throw new IOException("NBD meta context " + context + " refused (reply " + Integer.toHexString(r[0]) + ")");
            }
        }
        if (contextId < 0) {
            throw new IOException("NBD server has no context " + context);
        }

        b.reset();
        d.writeInt(name.length);
        d.write(name);
        d.writeShort(0);
        option(OPT_GO, b.toByteArray());
        while (true) {
            int[] r = optReply(OPT_GO);
            in.skipNBytes(r[1]);
            if (r[0] == REP_ACK) {
                return;
            }
            if (r[0] != REP_INFO) {
                throw new IOException("NBD export " + export + " refused (reply " + Integer.toHexString(r[0]) + ")");
            }
        }
    }

    private void option(int opt, byte[] data) throws IOException {
        out.writeLong(IHAVEOPT);
        out.writeInt(opt);
        out.writeInt(data.length);
        out.write(data);
        out.flush();
    }

    /** {reply type, length} of the next option reply. */
    private int[] optReply(int opt) throws IOException {
        if (in.readLong() != OPT_REPLY_MAGIC) {
            throw new IOException("bad NBD option reply magic");
        }
        if (in.readInt() != opt) {
            throw new IOException("NBD option reply for another option");
        }
        return new int[] {in.readInt(), in.readInt()};
    }

    private void expectAck(int opt) throws IOException {
        int[] r = optReply(opt);
        in.skipNBytes(r[1]);
        if (r[0] != REP_ACK) {
            throw new IOException("NBD option " + opt + " refused (reply " + Integer.toHexString(r[0]) + ")");
        }
    }

    private long request(int type, long offset, long length) throws IOException {
        long h = ++handle;
        out.writeInt(REQUEST_MAGIC);
        out.writeShort(0);
        out.writeShort(type);
        out.writeLong(h);
        out.writeLong(offset);
        out.writeInt((int) length);
        out.flush();
        return h;
    }

    /** An extent of a block status answer: {@code length} bytes from {@code offset} in the state {@code flags}. */
    public record Status(long offset, long length, int flags) {}

    /**
     * The states of [offset, offset + length) in the context, as the server describes them,
     * asked in requests of at most 1 GiB and clipped to the range.
     */
    public List<Status> blockStatus(long offset, long length) throws IOException {
        List<Status> out = new ArrayList<>();
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            long n = Math.min(end - pos, 1L << 30);
            long h = request(CMD_BLOCK_STATUS, pos, n);
            long covered = 0;
            boolean done = false;
            while (!done) {
                int magic = in.readInt();
                if (magic == SIMPLE_REPLY_MAGIC) {
                    int err = in.readInt();
                    in.readLong();
                    throw new IOException("NBD block status failed: error " + err);
                }
                if (magic != STRUCTURED_REPLY_MAGIC) {
                    throw new IOException("bad NBD reply magic " + Integer.toHexString(magic));
                }
                int flags = in.readUnsignedShort();
                int type = in.readUnsignedShort();
                long rh = in.readLong();
                int len = in.readInt();
                if (rh != h) {
                    throw new IOException("NBD reply for another request");
                }
                done = (flags & 1) != 0;
                if (type == REPLY_TYPE_BLOCK_STATUS) {
                    int id = in.readInt();
                    long p = pos;
                    for (int i = 0; i < (len - 4) / 8; i++) {
                        long extent = in.readInt() & 0xffff_ffffL;
                        int f = in.readInt();
                        if (id == contextId && p < pos + n) {
                            out.add(new Status(p, Math.min(extent, pos + n - p), f));
                        }
                        p += extent;
                    }
                    covered = Math.max(covered, p - pos);
                } else if (type == REPLY_TYPE_NONE) {
                    in.skipNBytes(len);
                } else if ((type & 0x8000) != 0) {
                    int err = in.readInt();
                    in.skipNBytes(len - 4);
                    throw new IOException("NBD block status failed: error " + err);
                } else {
                    in.skipNBytes(len);
                }
            }
            if (covered <= 0) {
                throw new IOException("NBD block status answered nothing at " + pos);
            }
            pos += Math.min(covered, n);
        }
        return out;
    }

    @Override
    public void close() throws IOException {
        try {
            request(CMD_DISC, 0, 0);
        } catch (IOException e) {
            // closing anyway
        }
        ch.close();
    }
}
