package vmfuse.reclaimer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static vmfuse.reclaimer.Tools.ok;
import static vmfuse.reclaimer.Tools.qemuIo;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Qcow2Map against images qemu-img and qemu-io make, and against corrupt ones. */
@Tag("integration")
class Qcow2MapTest {
    static final long K = 1024;
    static final long M = 1024 * K;

    @TempDir
    Path dir;

    /** One extent of `qemu-img map --output=json`. */
    record Extent(long start, long length, boolean data, long offset) {}

    static List<Extent> qemuMap(Path image) throws Exception {
        String json = ok("qemu-img", "map", "--output=json", "-f", "qcow2", image.toString());
        List<Extent> out = new ArrayList<>();
        Matcher m = Pattern.compile("\\{[^}]*\\}").matcher(json);
        while (m.find()) {
            String e = m.group();
            long offset = e.contains("\"offset\"") ? num(e, "offset") : -1;
            out.add(new Extent(num(e, "start"), num(e, "length"), e.contains("\"data\": true"), offset));
        }
        return out;
    }

    private static long num(String json, String key) {
        Matcher m = Pattern.compile("\"" + key + "\": (\\d+)").matcher(json);
        assertTrue(m.find(), key + " in " + json);
        return Long.parseLong(m.group(1));
    }

    private Path image(String name, long clusterSize, String size) throws Exception {
        Path p = dir.resolve(name);
        ok("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=" + clusterSize, p.toString(), size);
        return p;
    }

    @ParameterizedTest(name = "cluster size {0}")
    @ValueSource(longs = {4096, 65536, 2097152})
    void mapsEveryDataClusterWhereQemuImgMapDoes(long clusterSize) throws Exception {
        Path img = image("a.qcow2", clusterSize, "256M");
        qemuIo(img, "write -P 0x11 0 12k", "write -P 0x22 1m 3m", "write -P 0x33 100m 64k",
                "write -P 0x44 " + (256 * M - 8 * K) + " 8k", "write -P 0x55 37m 5k");
        try (Qcow2Map map = Qcow2Map.open(img)) {
            assertEquals(clusterSize, map.clusterSize());
            assertEquals(256 * M, map.virtualSize());
            long data = 0;
            for (Extent e : qemuMap(img)) {
                Qcow2Map.Translation t = map.translate(e.start(), e.length());
                if (e.data()) {
                    data += e.length();
                    long fileSize = Files.size(img);
                    long expect = Math.min(e.length(), fileSize - e.offset());
                    assertEquals(List.of(new Range(e.offset(), expect)), t.punchable(), e.toString());
                    assertEquals(List.of(new Range(e.start(), expect)), t.guest(), e + ": the guest's ranges punched");
                } else {
                    assertEquals(List.of(), t.punchable(), e.toString());
                    assertEquals(List.of(), t.guest(), e.toString());
                    assertEquals(Map.of(Qcow2Map.Skip.UNALLOCATED, e.length()), t.skipped(), e.toString());
                }
            }
            assertTrue(data >= 3 * M, "qemu-img map found the data: " + data);
            // a range that covers 4 KiB units in part: only whole units are punched
            Qcow2Map.Translation t = map.translate(1 * M + 100, 8 * K);
            assertEquals(4 * K, t.punchableBytes());
            assertEquals(4 * K, (long) t.skipped().get(Qcow2Map.Skip.PARTIAL_OR_OUTSIDE));
            Qcow2Map.Translation past = map.translate(256 * M - 4 * K, 1 * M);
            assertEquals(4 * K, past.punchableBytes());
            assertEquals(1 * M - 4 * K, (long) past.skipped().get(Qcow2Map.Skip.PARTIAL_OR_OUTSIDE));
        }
    }

    @Test
    void clustersASnapshotSharesAreNeverPunchable() throws Exception {
        Path img = image("s.qcow2", 65536, "64M");
        qemuIo(img, "write -P 0x61 0 4m");
        ok("qemu-img", "snapshot", "-c", "s1", img.toString());
        qemuIo(img, "write -P 0x62 1m 1m", "write -P 0x63 8m 1m");
        try (Qcow2Map map = Qcow2Map.open(img)) {
            Qcow2Map.Translation shared = map.translate(0, 1 * M);
            assertEquals(0, shared.punchableBytes());
            assertEquals(Map.of(Qcow2Map.Skip.SHARED, 1 * M), shared.skipped());
            assertEquals(1 * M, map.translate(1 * M, 1 * M).punchableBytes(), "rewritten since the snapshot: its own");
            assertEquals(1 * M, map.translate(8 * M, 1 * M).punchableBytes(), "written after the snapshot");
            assertEquals(2 * M, map.translate(0, 16 * M).punchableBytes());
        }
    }

    @Test
    void whatTheBackingFileHoldsIsLeftAlone() throws Exception {
        Path base = image("base.qcow2", 65536, "64M");
        qemuIo(base, "write -P 0x71 0 8m");
        Path top = dir.resolve("top.qcow2");
        ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.toString(), "-F", "qcow2", top.toString());
        qemuIo(top, "write -P 0x72 2m 1m");
        try (Qcow2Map map = Qcow2Map.open(top)) {
            Qcow2Map.Translation t = map.translate(0, 8 * M);
            assertEquals(1 * M, t.punchableBytes());
            assertEquals(Map.of(Qcow2Map.Skip.UNALLOCATED, 7 * M), t.skipped());
        }
    }

    @Test
    void compressedClustersAreNeverPunchable() throws Exception {
        Path src = image("src.qcow2", 65536, "64M");
        qemuIo(src, "write -P 0x41 0 4m");
        Path packed = dir.resolve("packed.qcow2");
        ok("qemu-img", "convert", "-c", "-O", "qcow2", src.toString(), packed.toString());
        try (Qcow2Map map = Qcow2Map.open(packed)) {
            Qcow2Map.Translation t = map.translate(0, 4 * M);
            assertEquals(0, t.punchableBytes());
            assertEquals(Map.of(Qcow2Map.Skip.COMPRESSED, 4 * M), t.skipped());
        }
    }

    /**
     * Offline reclaim: a guest "deletes" two regions; their punchable ranges are punched while no
     * QEMU runs. qemu-img check is clean, the other regions and the snapshot read back the same,
     * and the file takes less space.
     */
    @Test
    void anOfflineReclaimKeepsEveryLiveBlockAndQemuImgCheckIsClean() throws Exception {
        Path img = image("r.qcow2", 65536, "128M");
        qemuIo(img, "write -P 0x01 0 8m");
        ok("qemu-img", "snapshot", "-c", "before", img.toString());
        qemuIo(img, "write -P 0x02 8m 8m", "write -P 0x03 16m 8m", "write -P 0x04 24m 8m", "write -P 0x05 4m 1m");
        String snapshot = snapshotSha(img, "before");
        long before = Tools.allocated(img);

        long punched = 0;
        try (Qcow2Map map = Qcow2Map.open(img)) {
            for (Range deleted : List.of(new Range(0, 8 * M), new Range(8 * M, 8 * M),
                    new Range(16 * M + 4 * K, 8 * M - 4 * K))) {
                for (Range r : map.translate(deleted.offset(), deleted.length()).punchable()) {
                    ok("fallocate", "-p", "-o", String.valueOf(r.offset()), "-l", String.valueOf(r.length()),
                            img.toString());
                    punched += r.length();
                }
            }
        }
        assertEquals(1 * M + 8 * M + 8 * M - 4 * K, punched, "the snapshot's 7 MiB of region 0 are not punched");
        Tools.Result check = Tools.run("qemu-img", "check", img.toString());
        assertEquals(0, check.exit(), check.out() + check.err());
        assertTrue(check.out().contains("No errors were found"), check.out());
        qemuIo(img, "read -P 0x01 0 4m", "read -P 0x01 5m 3m", "read -P 0x03 16m 4k", "read -P 0x04 24m 8m",
                "read -P 0 4m 1m", "read -P 0 8m 8m");
        assertEquals(snapshot, snapshotSha(img, "before"), "the snapshot's contents are unchanged");
        // less the host filesystem's own blocks for the extents the holes split (ext4: one 4 KiB extent block)
        assertTrue(before - Tools.allocated(img) >= punched - 64 * K, "allocated " + before + " -> " + Tools.allocated(img));
    }

    private String snapshotSha(Path img, String snapshot) throws Exception {
        Path raw = dir.resolve("snap.raw");
        ok("qemu-img", "convert", "-l", "snapshot.name=" + snapshot, "-O", "raw", img.toString(), raw.toString());
        String sha = ok("sha256sum", raw.toString()).split(" ")[0];
        Files.delete(raw);
        return sha;
    }

    /** A copy of a fresh image with {@code bytes} written at {@code at}; opening it must fail naming {@code field}. */
    private void refused(String field, long at, byte[] bytes) throws Exception {
        Path img = image("c.qcow2", 65536, "64M");
        qemuIo(img, "write -P 0x41 0 1m");
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(bytes), at);
        }
        Qcow2Exception e = assertThrows(Qcow2Exception.class, () -> {
            try (Qcow2Map map = Qcow2Map.open(img)) {
                map.translate(0, 64 * M);
            }
        });
        assertEquals(field, e.field(), e.getMessage());
        assertTrue(e.getMessage().startsWith("refusing qcow2 image " + img + ": " + field), e.getMessage());
        Files.delete(img);
    }

    private static byte[] u32(int v) {
        return ByteBuffer.allocate(4).putInt(v).array();
    }

    private static byte[] u64(long v) {
        return ByteBuffer.allocate(8).putLong(v).array();
    }

    @Test
    void corruptHeadersAndTablesAreRefusedWithTheFieldNamed() throws Exception {
        refused("magic", 0, "QFI?".getBytes());
        refused("version", 4, u32(4));
        refused("cluster_bits", 20, u32(30));
        refused("cluster_bits", 20, u32(8));
        refused("size", 24, u64(1L << 60));
        refused("crypt_method", 32, u32(1));
        refused("l1_size", 36, u32(0));
        refused("l1_table_offset", 40, u64(1L << 40));
        refused("l1_table_offset", 40, u64(65536 + 512));
        refused("refcount_table_offset", 48, u64(0));
        refused("refcount_table_clusters", 56, u32(1 << 30));
        refused("incompatible_features", 72, u64(1)); // dirty
        refused("incompatible_features", 72, u64(1L << 40)); // unknown
        refused("refcount_order", 96, u32(7));
        refused("header_length", 100, u32(50));
        refused("backing_file_offset", 8, u64(60_000));
        // an L1 entry pointing past the end of the file: found when the table is needed
        Path img = image("l1.qcow2", 65536, "64M");
        qemuIo(img, "write -P 0x41 0 1m");
        long l1Offset;
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ)) {
            ByteBuffer b = ByteBuffer.allocate(8);
            ch.read(b, 40);
            l1Offset = b.flip().getLong();
        }
        Files.delete(img);
        refused("L1 entry 0", l1Offset, u64((1L << 63) | (1L << 40)));
        Path tiny = dir.resolve("tiny.qcow2");
        Files.write(tiny, new byte[50]);
        assertEquals("header", assertThrows(Qcow2Exception.class, () -> Qcow2Map.open(tiny)).field());
    }

    private static long readU64(Path img, long at) throws Exception {
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ)) {
            ByteBuffer b = ByteBuffer.allocate(8);
            ch.read(b, at);
            return b.flip().getLong();
        }
    }

    private static void writeU64(Path img, long at, long v) throws Exception {
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(u64(v)), at);
        }
    }

    /**
     * FAULTS.md R3: guest cluster 0's L2 entry edited to point, with COPIED set, at a metadata
     * cluster whose refcount is 1. Before, that cluster was returned as punchable (its own L2
     * table, in the review's case); it must refuse the image, naming what it overlaps, as QEMU's
     * overlap check does.
     */
    private void pointedAt(Path img, String target, long host) throws Exception {
        long l2 = readU64(img, readU64(img, 40)) & 0x00ff_ffff_ffff_fe00L;
        writeU64(img, l2, (1L << 63) | host);
        Qcow2Exception e = assertThrows(Qcow2Exception.class, () -> {
            try (Qcow2Map map = Qcow2Map.open(img)) {
                map.translate(0, 64 * K);
            }
        }, "guest cluster 0 pointed at " + target);
        assertEquals("L2 entry", e.field(), e.getMessage());
        assertTrue(e.getMessage().contains("overlaps " + target), e.getMessage());
        Tools.Result check = Tools.run("qemu-img", "check", img.toString());
        assertTrue(check.exit() != 0, "qemu-img check finds it too: " + check.out());
    }

    @Test
    void aCraftedQcow2ThatPointsDataAtItsL2TableIsRefused() throws Exception {
        Path img = image("l2.qcow2", 65536, "64M");
        qemuIo(img, "write -P 0x41 0 1m");
        long l2 = readU64(img, readU64(img, 40)) & 0x00ff_ffff_ffff_fe00L;
        pointedAt(img, "the L2 table of L1 entry 0", l2);
    }

    @Test
    void aCraftedQcow2ThatPointsDataAtAnyOtherMetadataIsRefused() throws Exception {
        Path img = image("rb.qcow2", 65536, "64M");
        qemuIo(img, "write -P 0x41 0 1m");
        long refcountTable = readU64(img, 48);
        pointedAt(img, "refcount block 0", readU64(img, refcountTable) & ~0x1ffL);

        img = image("rt.qcow2", 65536, "64M");
        qemuIo(img, "write -P 0x41 0 1m");
        pointedAt(img, "the refcount table", readU64(img, 48));

        img = image("l1.qcow2", 65536, "64M");
        qemuIo(img, "write -P 0x41 0 1m");
        pointedAt(img, "the L1 table", readU64(img, 40));

        img = image("bm.qcow2", 65536, "64M");
        qemuIo(img, "write -P 0x41 0 1m");
        ok("qemu-img", "bitmap", "--add", img.toString(), "b0");
        String info = ok("qemu-img", "info", "--output=json", img.toString());
        assertTrue(info.contains("\"b0\""), info);
        long dir = bitmapDirectory(img);
        pointedAt(img, "the bitmap directory", dir);

        img = image("sn.qcow2", 65536, "64M");
        qemuIo(img, "write -P 0x41 0 1m");
        ok("qemu-img", "snapshot", "-c", "s0", img.toString());
        qemuIo(img, "write -P 0x42 0 1m"); // cluster 0 is this image's own again (COPIED, refcount 1)
        long snapshotL1 = readU64(img, readU64(img, 64)); // the first snapshot's l1_table_offset
        pointedAt(img, "the L1 table of snapshot 0", snapshotL1);
    }

    /** The bitmap_directory_offset of the bitmaps header extension (type 0x23852875). */
    private static long bitmapDirectory(Path img) throws Exception {
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ)) {
            ByteBuffer h = ByteBuffer.allocate(4096);
            ch.read(h, 0);
            long pos = h.getInt(100);
            while (pos + 8 <= 4096) {
                int type = h.getInt((int) pos);
                int len = h.getInt((int) pos + 4);
                if (type == 0x2385_2875) {
                    return h.getLong((int) pos + 8 + 16);
                }
                assertTrue(type != 0, "no bitmaps extension");
                pos += 8 + ((len + 7) & ~7);
            }
        }
        throw new AssertionError("no bitmaps extension");
    }
}
