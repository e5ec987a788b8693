package vmfuse.reclaimer;

import java.io.IOException;

/**
 * Keeps every process off an image while the reclaimer works on its file directly (a qcow2 image
 * no QEMU runs: its metadata may only be read while nothing can change it). The filesystem
 * implements it: it sees every open of the image.
 */
public interface ImageHold {
    /**
     * Runs {@code action} while no process has the image open and none can open it (an open
     * waits until the action is done); returns false, without running it, if a process has the
     * image open.
     */
    boolean whileClosed(Action action) throws IOException;

    /** Work on the image file. */
    interface Action {
        void run() throws IOException;
    }
}
