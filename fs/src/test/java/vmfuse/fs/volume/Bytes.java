package vmfuse.fs.volume;

import java.util.Arrays;

import jnr.ffi.Memory;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import vmfuse.fs.FsException;

/** Native buffers for the volume tests, as a door hands them over. */
public final class Bytes {
    private Bytes() {}

    /** A native copy of {@code b}. */
    public static Pointer of(byte[] b) {
        Pointer p = Memory.allocateDirect(Runtime.getSystemRuntime(), Math.max(b.length, 1));
        p.put(0, b, 0, b.length);
        return p;
    }

    /** {@code n} bytes of {@code value}. */
    public static byte[] filled(int n, int value) {
        byte[] b = new byte[n];
        Arrays.fill(b, (byte) value);
        return b;
    }

    /** What a read of up to {@code n} bytes at {@code offset} of {@code v} returns. */
    public static byte[] read(Volume v, long offset, int n) throws FsException {
        Pointer p = Memory.allocateDirect(Runtime.getSystemRuntime(), n);
        int got = v.read(p, n, offset);
        byte[] b = new byte[got];
        p.get(0, b, 0, got);
        return b;
    }
}
