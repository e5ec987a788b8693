package vmfuse.reclaimer;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/*
 * Where a qcow2 image keeps a guest's bytes, read from the image file alone, for punching what a
 * guest freed while no QEMU has the image open. Written from QEMU's docs/interop/qcow2.txt.
 *
 *   header (cluster 0, big-endian)      L1 table (l1_size entries of 8 bytes)
 *     cluster_bits, size, l1_size,  ──►   bit 63 COPIED | bits 9-55 L2 table offset
 *     l1_table_offset, refcount_*           │
 *                                           ▼
 *                                       L2 table (one cluster, cluster_size / 8 entries)
 *                                         bit 63 COPIED | bit 62 compressed | bits 9-55 host
 *                                         cluster offset | bit 0 reads as zeros (v3)
 *   refcount table ──► refcount blocks: the number of references to each host cluster
 *
 * A guest range may be punched in the file only where it is in a standard (not compressed) data
 * cluster of this file whose COPIED flag is set AND whose refcount is exactly 1: a cluster a
 * snapshot shares has a refcount above 1; metadata (tables, header, snapshots) is never pointed
 * to by an L2 entry as data; an unallocated cluster reads from the backing file and has nothing
 * here to punch. Punching part of such a cluster makes that part read as zeros and changes no
 * metadata, so qemu-img check stays clean.
 *
 * Metadata is never punched, whatever an L2 entry says (a corrupt or crafted image can point a
 * data entry at its own tables): at open, every cluster that holds metadata is listed, as QEMU's
 * overlap checks list them (qcow2_check_metadata_overlap): the header, the L1 table, every L2
 * table, the refcount table and blocks, the snapshot table with each snapshot's L1 table and L2
 * tables, the bitmap directory with each bitmap's table and data clusters. A data cluster that is
 * one of them refuses the image, naming what it overlaps.
 *
 * Everything read is checked before use: header fields against the spec's limits and the file's
 * length, table offsets for alignment and range. A failed check refuses the image and names the
 * field. Images this code does not understand well enough to be sure are refused too: unknown
 * incompatible features, the dirty or corrupt bits (refcounts may be stale), an external data
 * file, extended L2 entries, encryption.
 *
 * Not thread-safe; open one per use, while no QEMU has the image open.
 */
public final class Qcow2Map implements AutoCloseable {
    static final int MAGIC = 0x514649fb; // "QFI\xfb"
    private static final long OFFSET_MASK = 0x00ff_ffff_ffff_fe00L; // bits 9-55
    private static final long COPIED = 1L << 63;
    private static final long COMPRESSED = 1L << 62;
    private static final long INCOMPAT_DIRTY = 1;
    private static final long INCOMPAT_CORRUPT = 2;
    private static final long INCOMPAT_DATA_FILE = 4;
    private static final long INCOMPAT_COMPRESSION_TYPE = 8;
    private static final long INCOMPAT_EXTENDED_L2 = 16;
    /** A guest or host offset qemu accepts: below 2^56. */
    private static final long MAX_OFFSET = 1L << 56;
    private static final int PUNCH_UNIT = 4096;

    /** Why a guest byte is not punchable. */
    public enum Skip {
        /** Not allocated in this file: reads from the backing file, or zeros. */
        UNALLOCATED,
        /** In a compressed cluster, which shares its host cluster with others. */
        COMPRESSED,
        /** In a cluster a snapshot (or anything else) also references. */
        SHARED,
        /** Past the disk's end, or in a 4 KiB unit the range covers only in part. */
        PARTIAL_OR_OUTSIDE
    }

    /**
     * What {@link #translate} found: ranges of the image file to punch, the guest ranges they hold
     * (what a punch of them frees for the guest), and guest bytes skipped, by reason.
     */
    public record Translation(List<Range> punchable, List<Range> guest, Map<Skip, Long> skipped) {
        public long punchableBytes() {
            return punchable.stream().mapToLong(Range::length).sum();
        }
    }

    private final Path path;
    private final FileChannel ch;
    private final long fileSize;
    private final int version;
    private final int clusterBits;
    private final long clusterSize;
    private final long virtualSize;
    private final long[] l1;
    private final long[] refcountTable;
    private final int refcountOrder;
    /** Every cluster (by host offset) that holds metadata, and what. */
    private final TreeMap<Long, String> metadata;
    private final Map<Long, long[]> l2Cache = new LinkedHashMap<>(16, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<Long, long[]> e) {
            return size() > 64;
        }
    };

    private Qcow2Map(Path path, FileChannel ch, long fileSize, int version, int clusterBits, long virtualSize,
            long[] l1, long[] refcountTable, int refcountOrder, TreeMap<Long, String> metadata) {
        this.metadata = metadata;
        this.path = path;
        this.ch = ch;
        this.fileSize = fileSize;
        this.version = version;
        this.clusterBits = clusterBits;
        this.clusterSize = 1L << clusterBits;
        this.virtualSize = virtualSize;
        this.l1 = l1;
        this.refcountTable = refcountTable;
        this.refcountOrder = refcountOrder;
    }

    /** Opens and checks {@code image}; a file that is not a qcow2 image we can be sure of is refused. */
    public static Qcow2Map open(Path image) throws Qcow2Exception, IOException {
        FileChannel ch = FileChannel.open(image, StandardOpenOption.READ);
        try {
            return read(image, ch);
        } catch (Qcow2Exception | IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    private static Qcow2Map read(Path image, FileChannel ch) throws Qcow2Exception, IOException {
        long fileSize = ch.size();
        if (fileSize < 72) {
            throw new Qcow2Exception(image, "header", "file of " + fileSize + " bytes is shorter than a qcow2 header");
        }
        ByteBuffer h = readAt(ch, 0, (int) Math.min(fileSize, 112));
        if (h.getInt(0) != MAGIC) {
            throw new Qcow2Exception(image, "magic", String.format("0x%08x, not QFI\\xfb", h.getInt(0)));
        }
        int version = h.getInt(4);
        if (version != 2 && version != 3) {
            throw new Qcow2Exception(image, "version", version + ", not 2 or 3");
        }
        long backingOffset = h.getLong(8);
        int backingSize = h.getInt(16);
        int clusterBits = h.getInt(20);
        if (clusterBits < 9 || clusterBits > 21) {
            throw new Qcow2Exception(image, "cluster_bits", clusterBits + ", not 9..21");
        }
        long clusterSize = 1L << clusterBits;
        long size = h.getLong(24);
        if (size < 0 || size > MAX_OFFSET) {
            throw new Qcow2Exception(image, "size", Long.toUnsignedString(size) + " is past 2^56");
        }
        int cryptMethod = h.getInt(32);
        if (cryptMethod != 0) {
            throw new Qcow2Exception(image, "crypt_method", cryptMethod + ": encrypted images are not reclaimed");
        }
        long l1Size = Integer.toUnsignedLong(h.getInt(36));
        long l1Offset = h.getLong(40);
        long refcountTableOffset = h.getLong(48);
        long refcountTableClusters = Integer.toUnsignedLong(h.getInt(56));
        int refcountOrder = 4;
        int headerLength = 72;
        if (version == 3) {
            if (fileSize < 104) {
                throw new Qcow2Exception(image, "header_length", "a version 3 header needs 104 bytes, the file has "
                        + fileSize);
            }
            long incompatible = h.getLong(72);
            refcountOrder = h.getInt(96);
            headerLength = h.getInt(100);
            if (incompatible != 0) {
                checkIncompatible(image, incompatible);
            }
            if (refcountOrder < 0 || refcountOrder > 6) {
                throw new Qcow2Exception(image, "refcount_order", refcountOrder + ", not 0..6");
            }
            if (headerLength < 104 || headerLength > clusterSize) {
                throw new Qcow2Exception(image, "header_length", headerLength + ", not 104.." + clusterSize);
            }
        }
        if (backingOffset != 0) {
            if (backingOffset < headerLength || backingSize < 1 || backingSize > 1023
                    || backingOffset + backingSize > clusterSize) {
                throw new Qcow2Exception(image, "backing_file_offset", backingOffset + " with backing_file_size "
                        + backingSize + " is not inside the header cluster");
            }
        }
        long l2Entries = clusterSize / 8;
        long needL1 = ceilDiv(size, clusterSize * l2Entries);
        if (l1Size < needL1 || l1Size > (32L << 20) / 8) {
            throw new Qcow2Exception(image, "l1_size", l1Size + ": the disk of " + size + " bytes needs " + needL1
                    + " entries (at most 4M)");
        }
        checkTable(image, "l1_table_offset", l1Offset, l1Size * 8, clusterSize, fileSize);
        if (refcountTableClusters < 1 || refcountTableClusters > (8L << 20) / clusterSize + 1) {
            throw new Qcow2Exception(image, "refcount_table_clusters", refcountTableClusters + " is not 1..8 MiB worth");
        }
        checkTable(image, "refcount_table_offset", refcountTableOffset, refcountTableClusters * clusterSize, clusterSize,
                fileSize);
        long[] l1 = readLongs(ch, l1Offset, (int) l1Size);
        long[] refcountTable = readLongs(ch, refcountTableOffset, (int) (refcountTableClusters * clusterSize / 8));
        Metadata md = new Metadata(image, ch, clusterSize, fileSize);
        md.add(0, clusterSize, "the header");
        md.add(l1Offset, l1Size * 8, "the L1 table");
        md.l2Tables(l1, "L1 entry ", "the L2 table of L1 entry ");
        md.add(refcountTableOffset, refcountTableClusters * clusterSize, "the refcount table");
        for (int i = 0; i < refcountTable.length; i++) {
            long block = refcountTable[i] & ~0x1ffL;
            if (block != 0) {
                md.add(block, clusterSize, "refcount block " + i);
            }
        }
        md.snapshots(Integer.toUnsignedLong(h.getInt(60)), h.getLong(64));
        if (version == 3) {
            md.extensions(headerLength);
        }
        return new Qcow2Map(image, ch, fileSize, version, clusterBits, size, l1, refcountTable, refcountOrder,
                md.clusters);
    }

    /** The metadata clusters of an image, gathered at open (see the comment at the top). */
    private static final class Metadata {
        private static final int BITMAPS_EXTENSION = 0x2385_2875;
        private final Path image;
        private final FileChannel ch;
        private final long clusterSize;
        private final long fileSize;
        final TreeMap<Long, String> clusters = new TreeMap<>();

        Metadata(Path image, FileChannel ch, long clusterSize, long fileSize) {
            this.image = image;
            this.ch = ch;
            this.clusterSize = clusterSize;
            this.fileSize = fileSize;
        }

        /** The clusters [offset, offset + length) touches hold {@code what}. */
        void add(long offset, long length, String what) {
            for (long c = offset & -clusterSize; c < offset + length; c += clusterSize) {
                clusters.putIfAbsent(c, what);
            }
        }

        /** The L2 tables an L1 table points to; {@code field} + index names an entry that is out of range. */
        void l2Tables(long[] l1, String field, String what) throws Qcow2Exception {
            for (int i = 0; i < l1.length; i++) {
                long l2 = l1[i] & OFFSET_MASK;
                if (l2 != 0) {
                    checkTable(image, field + i, l2, clusterSize, clusterSize, fileSize);
                    add(l2, clusterSize, what + i);
                }
            }
        }

        /** The snapshot table (qcow2.txt "Snapshot table"), each snapshot's L1 table and its L2 tables. */
        void snapshots(long count, long offset) throws Qcow2Exception, IOException {
            if (count == 0) {
                return;
            }
            if (count > 65536) {
                throw new Qcow2Exception(image, "nb_snapshots", count + ", more than QEMU's 65536");
            }
            checkTable(image, "snapshots_offset", offset, 1, clusterSize, fileSize);
            long pos = offset;
            for (long i = 0; i < count; i++) {
                checkTable(image, "snapshot " + i, pos & -clusterSize, pos % clusterSize + 40, clusterSize, fileSize);
                ByteBuffer e = readAt(ch, pos, 40);
                long l1Offset = e.getLong(0);
                long l1Size = Integer.toUnsignedLong(e.getInt(8));
                int idSize = e.getShort(12) & 0xffff;
                int nameSize = e.getShort(14) & 0xffff;
                long extra = Integer.toUnsignedLong(e.getInt(36));
                if (l1Size > (32L << 20) / 8 || extra > 1 << 16) {
                    throw new Qcow2Exception(image, "snapshot " + i, "l1_size " + l1Size + " or extra_data_size "
                            + extra + " out of range");
                }
                checkTable(image, "snapshot " + i + " l1_table_offset", l1Offset, l1Size * 8, clusterSize, fileSize);
                add(l1Offset, l1Size * 8, "the L1 table of snapshot " + i);
                l2Tables(readLongs(ch, l1Offset, (int) l1Size), "snapshot " + i + " L1 entry ",
                        "an L2 table of snapshot " + i + ", L1 entry ");
                pos += (40 + extra + idSize + nameSize + 7) & ~7L;
            }
            add(offset, pos - offset, "the snapshot table");
        }

        /** Header extensions (version 3): the bitmaps extension's directory, tables and data clusters. */
        void extensions(long headerLength) throws Qcow2Exception, IOException {
            long pos = headerLength;
            while (pos + 8 <= clusterSize && pos + 8 <= fileSize) {
                ByteBuffer x = readAt(ch, pos, 8);
                int type = x.getInt(0);
                long length = Integer.toUnsignedLong(x.getInt(4));
                if (type == 0) {
                    return; // end of the extensions
                }
                if (pos + 8 + length > clusterSize) {
                    throw new Qcow2Exception(image, "header extension 0x" + Integer.toHexString(type), "of " + length
                            + " bytes runs past the header cluster");
                }
                if (type == BITMAPS_EXTENSION && length >= 24) {
                    ByteBuffer b = readAt(ch, pos + 8, 24);
                    bitmaps(Integer.toUnsignedLong(b.getInt(0)), b.getLong(8), b.getLong(16));
                }
                pos += 8 + ((length + 7) & ~7L);
            }
        }

        /** The bitmap directory (qcow2.txt "Bitmap directory"), each bitmap's table and data clusters. */
        private void bitmaps(long count, long dirSize, long dirOffset) throws Qcow2Exception, IOException {
            if (count == 0) {
                return;
            }
            if (count > 65535 || dirSize > 64L << 20) {
                throw new Qcow2Exception(image, "bitmaps extension", count + " bitmaps, a directory of " + dirSize
                        + " bytes: out of range");
            }
            checkTable(image, "bitmap_directory_offset", dirOffset, dirSize, clusterSize, fileSize);
            add(dirOffset, dirSize, "the bitmap directory");
            ByteBuffer dir = readAt(ch, dirOffset, (int) dirSize);
            int pos = 0;
            for (long i = 0; i < count; i++) {
                if (pos + 24 > dirSize) {
                    throw new Qcow2Exception(image, "bitmap directory", "entry " + i + " runs past its end");
                }
                long tableOffset = dir.getLong(pos);
                long tableSize = Integer.toUnsignedLong(dir.getInt(pos + 8));
                int nameSize = dir.getShort(pos + 18) & 0xffff;
                long extra = Integer.toUnsignedLong(dir.getInt(pos + 20));
                if (tableSize > (64L << 20) / 8 || extra > 1 << 16) {
                    throw new Qcow2Exception(image, "bitmap " + i, "bitmap_table_size " + tableSize
                            + " or extra_data_size " + extra + " out of range");
                }
                checkTable(image, "bitmap " + i + " bitmap_table_offset", tableOffset, tableSize * 8, clusterSize,
                        fileSize);
                add(tableOffset, tableSize * 8, "the table of bitmap " + i);
                long[] table = readLongs(ch, tableOffset, (int) tableSize);
                for (long entry : table) {
                    long data = entry & OFFSET_MASK;
                    if (data != 0) {
                        add(data, clusterSize, "a data cluster of bitmap " + i);
                    }
                }
                pos += (int) ((24 + extra + nameSize + 7) & ~7L);
            }
        }
    }

    private static void checkIncompatible(Path image, long bits) throws Qcow2Exception {
        if ((bits & INCOMPAT_DIRTY) != 0) {
            throw new Qcow2Exception(image, "incompatible_features", "the dirty bit is set (QEMU did not close the "
                    + "image; its refcounts may be stale: run qemu-img check -r all)");
        }
        if ((bits & INCOMPAT_CORRUPT) != 0) {
            throw new Qcow2Exception(image, "incompatible_features", "the corrupt bit is set");
        }
        if ((bits & INCOMPAT_DATA_FILE) != 0) {
            throw new Qcow2Exception(image, "incompatible_features", "the data are in an external data file");
        }
        if ((bits & INCOMPAT_EXTENDED_L2) != 0) {
            throw new Qcow2Exception(image, "incompatible_features", "extended L2 entries (subclusters) are not "
                    + "supported");
        }
        long unknown = bits & ~(INCOMPAT_COMPRESSION_TYPE);
        if (unknown != 0) {
            throw new Qcow2Exception(image, "incompatible_features", "unknown bits 0x" + Long.toHexString(unknown));
        }
    }

    private static void checkTable(Path image, String field, long offset, long length, long clusterSize, long fileSize)
            throws Qcow2Exception {
        if (offset <= 0 || offset % clusterSize != 0) {
            throw new Qcow2Exception(image, field, offset + " is not a cluster boundary past the header");
        }
        if (offset > fileSize || length > fileSize - offset) {
            throw new Qcow2Exception(image, field, offset + " + " + length + " bytes is past the end of the file ("
                    + fileSize + ")");
        }
    }

    private static long ceilDiv(long a, long b) {
        return a / b + (a % b == 0 ? 0 : 1);
    }

    private static ByteBuffer readAt(FileChannel ch, long pos, int len) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(len);
        while (b.hasRemaining()) {
            if (ch.read(b, pos + b.position()) < 0) {
                throw new IOException("unexpected end of file at " + (pos + b.position()));
            }
        }
        return b.flip();
    }

    private static long[] readLongs(FileChannel ch, long pos, int n) throws IOException {
        long[] out = new long[n];
        readAt(ch, pos, n * 8).asLongBuffer().get(out);
        return out;
    }

    /**
     * The virtual disk size in a qcow2 header (8 bytes at 24), read alone: safe while QEMU has the
     * image open, since only a resize changes it.
     */
    public static long headerSize(Path image) throws IOException {
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.READ)) {
            ByteBuffer h = readAt(ch, 0, 32);
            if (h.getInt(0) != MAGIC) {
                throw new IOException(image + " is not a qcow2 image");
            }
            return h.getLong(24);
        }
    }

    public long clusterSize() {
        return clusterSize;
    }

    public long virtualSize() {
        return virtualSize;
    }

    public int version() {
        return version;
    }

    /**
     * The host ranges of the guest range [offset, offset + length) that may be punched, in 4 KiB
     * units whole inside both the guest range and one cluster, merged where adjacent; the rest,
     * counted by reason.
     */
    public Translation translate(long offset, long length) throws Qcow2Exception, IOException {
        if (offset < 0 || length < 0 || length > Long.MAX_VALUE - offset) {
            throw new IllegalArgumentException("bad range offset=" + offset + " length=" + length);
        }
        Map<Skip, Long> skipped = new EnumMap<>(Skip.class);
        List<Range> out = new ArrayList<>();
        List<Range> guest = new ArrayList<>();
        long end = Math.min(offset + length, virtualSize);
        if (offset + length > end) {
            add(skipped, Skip.PARTIAL_OR_OUTSIDE, offset + length - Math.max(offset, end));
        }
        long pos = offset;
        while (pos < end) {
            long clusterStart = pos & ~(clusterSize - 1);
            long clusterEnd = Math.min(clusterStart + clusterSize, end);
            long n = clusterEnd - pos;
            long entry = l2Entry(pos >>> clusterBits);
            long host = entry & OFFSET_MASK;
            Skip why = null;
            if ((entry & COMPRESSED) != 0) {
                why = Skip.COMPRESSED;
            } else if (host == 0) {
                why = Skip.UNALLOCATED;
            } else if ((entry & COPIED) == 0 || refcount(host) != 1) {
                why = Skip.SHARED;
            }
            if (why != null) {
                add(skipped, why, n);
            } else {
                checkData(host, pos);
                long first = (pos + PUNCH_UNIT - 1) & ~(long) (PUNCH_UNIT - 1);
                long last = clusterEnd & ~(long) (PUNCH_UNIT - 1);
                if (last > first) {
                    long h = host + (first - clusterStart);
                    long len = Math.min(last - first, fileSize - h); // a last cluster may end past the file
                    if (len > 0) {
                        merge(out, h, len);
                        merge(guest, first, len);
                    }
                    add(skipped, Skip.PARTIAL_OR_OUTSIDE, n - (last - first));
                } else {
                    add(skipped, Skip.PARTIAL_OR_OUTSIDE, n);
                }
            }
            pos = clusterEnd;
        }
        return new Translation(out, guest, skipped);
    }

    private static void add(Map<Skip, Long> m, Skip k, long n) {
        if (n > 0) {
            m.merge(k, n, Long::sum);
        }
    }

    private static void merge(List<Range> out, long offset, long length) {
        if (!out.isEmpty()) {
            Range last = out.get(out.size() - 1);
            if (last.offset() + last.length() == offset) {
                out.set(out.size() - 1, new Range(last.offset(), last.length() + length));
                return;
            }
        }
        out.add(new Range(offset, length));
    }

    private void checkData(long host, long guest) throws Qcow2Exception {
        if (host % clusterSize != 0 || host >= MAX_OFFSET) {
            throw new Qcow2Exception(path, "L2 entry", "the data cluster of guest offset " + guest + " is at " + host
                    + ", not a cluster boundary");
        }
        String overlaps = metadata.get(host);
        if (overlaps != null) {
            throw new Qcow2Exception(path, "L2 entry", "the data cluster of guest offset " + guest + " at " + host
                    + " overlaps " + overlaps + "; the image is corrupt (qemu-img check names it too), nothing is"
                    + " punched");
        }
    }

    /** The L2 entry of guest cluster {@code index}, 0 if its L2 table is not allocated. */
    private long l2Entry(long index) throws Qcow2Exception, IOException {
        long perTable = clusterSize / 8;
        long l1Index = index / perTable;
        if (l1Index >= l1.length) {
            return 0;
        }
        long l2Offset = l1[(int) l1Index] & OFFSET_MASK;
        if (l2Offset == 0) {
            return 0;
        }
        long[] table = l2Cache.get(l2Offset);
        if (table == null) {
            checkTable(path, "L1 entry " + l1Index, l2Offset, clusterSize, clusterSize, fileSize);
            table = readLongs(ch, l2Offset, (int) perTable);
            l2Cache.put(l2Offset, table);
        }
        return table[(int) (index % perTable)];
    }

    /** The refcount of the host cluster at {@code host}; 0 if no refcount block covers it. */
    long refcount(long host) throws Qcow2Exception, IOException {
        long cluster = host >>> clusterBits;
        int bits = 1 << refcountOrder;
        long perBlock = clusterSize * 8 / bits;
        long tableIndex = cluster / perBlock;
        if (tableIndex >= refcountTable.length) {
            return 0;
        }
        long block = refcountTable[(int) tableIndex] & ~0x1ffL; // bits 0-8 are reserved
        if (block == 0) {
            return 0;
        }
        checkTable(path, "refcount table entry " + tableIndex, block, clusterSize, clusterSize, fileSize);
        long i = cluster % perBlock;
        long bitPos = i * bits;
        if (bits < 8) {
            int b = readAt(ch, block + bitPos / 8, 1).get(0) & 0xff;
            return (b >>> (int) (bitPos % 8)) & ((1 << bits) - 1); // least significant bits first
        }
        ByteBuffer v = readAt(ch, block + bitPos / 8, bits / 8);
        return switch (bits) {
            case 8 -> v.get(0) & 0xffL;
            case 16 -> v.getShort(0) & 0xffffL;
            case 32 -> v.getInt(0) & 0xffff_ffffL;
            default -> v.getLong(0);
        };
    }

    @Override
    public void close() throws IOException {
        ch.close();
    }
}
