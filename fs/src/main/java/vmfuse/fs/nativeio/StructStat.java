package vmfuse.fs.nativeio;

import jnr.ffi.Memory;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;

/**
 * The kernel's struct stat on x86_64 (asm/stat.h, 144 bytes), read and filled by offset: the
 * buffers FUSE hands us and the ones {@link LibC#fstat} fills are this struct.
 */
public final class StructStat {
    private StructStat() {}

    /** sizeof(struct stat) is 144; a little headroom. */
    public static final int SIZE = 256;
    public static final int DEV = 0;
    public static final int INO = 8;
    public static final int NLINK = 16;
    public static final int MODE = 24;
    public static final int UID = 28;
    public static final int GID = 32;
    public static final int SIZE_FIELD = 48;
    public static final int BLKSIZE = 56;
    public static final int BLOCKS = 64;
    public static final int ATIME = 72;
    public static final int MTIME = 88;
    public static final int CTIME = 104;

    /** Byte size and bytes allocated on the backing filesystem (st_blocks * 512). */
    public record Usage(long size, long allocated) {}

    public static Pointer allocate() {
        return Memory.allocate(Runtime.getSystemRuntime(), SIZE);
    }

    public static int type(Pointer st) {
        return st.getInt(MODE) & Native.S_IFMT;
    }

    /** Which file it is: st_dev and st_ino, whatever names it has now. */
    public record FileId(long dev, long ino) {}

    public static FileId fileId(Pointer st) {
        return new FileId(st.getLong(DEV), st.getLong(INO));
    }

    public static Usage usage(Pointer st) {
        return new Usage(st.getLong(SIZE_FIELD), st.getLong(BLOCKS) * 512);
    }

    /** fstat of a descriptor; -errno if it fails. */
    public static int fstat(int fd, Pointer st) {
        return LibC.INSTANCE.fstat(fd, st) == 0 ? 0 : -Native.errno();
    }

    /** Sets st_uid and st_gid of a filled struct stat. */
    public static void owner(Pointer st, int uid, int gid) {
        st.putInt(UID, uid);
        st.putInt(GID, gid);
    }

    /**
     * Fills {@code st} for a regular file that is not a file of a filesystem (a journal device):
     * mode, one link, owner root ({@link #owner} sets another), size, blocks, and all three times
     * set to {@code mtimeMillis}.
     */
    public static void fillRegular(Pointer st, int perm, long size, long allocated, long mtimeMillis) {
        st.setMemory(0, 144, (byte) 0);
        st.putLong(NLINK, 1);
        st.putInt(MODE, Native.S_IFREG | (perm & 07777));
        st.putLong(SIZE_FIELD, size);
        st.putLong(BLKSIZE, 4096);
        st.putLong(BLOCKS, allocated / 512);
        for (int at : new int[] {ATIME, MTIME, CTIME}) {
            st.putLong(at, mtimeMillis / 1000);
            st.putLong(at + 8, (mtimeMillis % 1000) * 1_000_000);
        }
    }
}
