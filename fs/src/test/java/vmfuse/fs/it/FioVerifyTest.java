package vmfuse.fs.it;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

import org.junit.jupiter.api.Test;

/** fio with crc32c verification through the mount: random writes from several threads, then reads. */
class FioVerifyTest extends OnOneMount {

    private static Proc.Result fio(String... args) {
        // verify state files go in the test's own directory, not in the working directory
        java.util.List<String> cmd = new java.util.ArrayList<>(java.util.List.of("fio", "--output-format=normal",
                "--aux-path=" + m.root));
        cmd.addAll(java.util.List.of(args));
        return Proc.run(Duration.ofSeconds(300), cmd);
    }

    @Test
    void randomWritesThenReadsVerifyWithCrc32c() throws Exception {
        Path dir = m.mnt.resolve("images");
        // write phase: 4 jobs, each its own file, random 4k..64k writes with a crc32c header per block
        Proc.Result write = fio("--name=w", "--directory=" + dir, "--filename_format=fio.$jobnum", "--numjobs=4",
                "--size=48M", "--rw=randwrite", "--bsrange=4k-64k", "--ioengine=psync", "--verify=crc32c",
                "--do_verify=0", "--verify_state_save=1", "--fsync=64", "--group_reporting");
        assertTrue(write.ok(), write.describe());
        // read phase, a separate run: every block read back and checked against its checksum
        Proc.Result verify = fio("--name=w", "--directory=" + dir, "--filename_format=fio.$jobnum", "--numjobs=4",
                "--size=48M", "--rw=randwrite", "--bsrange=4k-64k", "--ioengine=psync", "--verify=crc32c",
                "--verify_only", "--verify_state_load=1", "--group_reporting");
        assertTrue(verify.ok(), verify.describe());
        assertFalse(verify.out().contains("verify:") && verify.out().contains("bad"), verify.describe());

        // direct I/O with an async engine too: O_DIRECT opens, as QEMU's cache=none makes
        Proc.Result direct = fio("--name=d", "--filename=" + dir.resolve("fio.direct"), "--size=32M",
                "--rw=randrw", "--bs=4k", "--direct=1", "--ioengine=libaio", "--iodepth=16",
                "--verify=crc32c", "--do_verify=1");
        assertTrue(direct.ok(), direct.describe());

        assertTrue(Files.exists(m.backing("fio.direct")));
    }

    @Test
    void verificationCatchesABlockCorruptedBehindTheMount() throws Exception {
        // the checks above can fail: corrupt one block in the backing file and fio must notice
        Path file = m.image("fio.seq");
        String[] job = {"--name=s", "--filename=" + file, "--size=8M", "--rw=write", "--bs=4k",
            "--ioengine=psync", "--verify=crc32c"};
        assertTrue(fio(concat(job, "--do_verify=0")).ok());
        Proc.Result clean = fio(concat(job, "--verify_only"));
        assertTrue(clean.ok(), clean.describe());
        byte[] junk = new byte[4096];
        java.util.Arrays.fill(junk, (byte) 0x5c);
        try (var ch = java.nio.channels.FileChannel.open(m.backing("fio.seq"), java.nio.file.StandardOpenOption.WRITE)) {
            ch.write(java.nio.ByteBuffer.wrap(junk), 8192);
        }
        Proc.ok("sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"); // the mount's page cache holds the old block
        Proc.Result caught = fio(concat(job, "--verify_only"));
        assertFalse(caught.ok(), "fio did not notice a corrupted block:\n" + caught.describe());
    }

    private static String[] concat(String[] a, String... b) {
        String[] r = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }
}
