package vmfuse.reclaimer;

import java.io.IOException;

/** Punches a range of the image file; returns the bytes of disk it freed. */
public interface Puncher {
    long punch(long offset, long length) throws IOException;
}
