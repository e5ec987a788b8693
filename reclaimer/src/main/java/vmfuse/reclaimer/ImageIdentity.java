package vmfuse.reclaimer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * What says a raw image is the one whose writes were watched, and unwritten since: its device,
 * inode, size, and modification and change times to the nanosecond, as one token
 * ("dev:ino:size:mtime:ctime"). Any write to the file through the mount or on the store, a
 * truncate, a chmod, or a copy or rename over it (a restore from a backup) changes it.
 */
public final class ImageIdentity {
    private final Path file;

    public ImageIdentity(Path file) {
        this.file = file;
    }

    /** The token now; "absent" if the file cannot be stat'ed. */
    public String now() {
        try {
            Map<String, Object> a = Files.readAttributes(file, "unix:dev,ino,size,lastModifiedTime,ctime",
                    LinkOption.NOFOLLOW_LINKS);
            return a.get("dev") + ":" + a.get("ino") + ":" + a.get("size") + ":" + nanos(a.get("lastModifiedTime"))
                    + ":" + nanos(a.get("ctime"));
        } catch (IOException | UnsupportedOperationException e) {
            return "absent";
        }
    }

    private static long nanos(Object t) {
        return ((FileTime) t).to(TimeUnit.NANOSECONDS);
    }
}
