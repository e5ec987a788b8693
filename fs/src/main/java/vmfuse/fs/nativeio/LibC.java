package vmfuse.fs.nativeio;

import jnr.ffi.LibraryLoader;
import jnr.ffi.Pointer;
import jnr.ffi.annotations.SaveError;

/**
 * The libc calls vmfuse makes on backing files, bound with jnr-ffi.
 *
 * <p>jnr-posix lacks the *at family, fallocate, OFD locks and statvfs into a caller's buffer,
 * and it copies through Java arrays; these calls take the native buffers that FUSE hands us
 * (read/write buffers, struct stat, struct statvfs, struct timespec[2]) so a
 * read or write is one pread/pwrite straight between the kernel's buffer and the backing file.
 * Every method returns -1 and leaves errno (read with {@link Native#errno()}) on failure.
 */
public interface LibC {

    LibC INSTANCE = LibraryLoader.create(LibC.class).failImmediately().load("c");

    /** For buffers libfuse takes ownership of and free()s (struct fuse_bufvec). */
    Pointer malloc(long size);

    void free(Pointer p);

    /** The passwd entry of {@code uid} (its first field, char *pw_name), or null; not thread-safe: see Native. */
    Pointer getpwuid(int uid);

    @SaveError int openat(int dirfd, String path, int flags, int mode);
    @SaveError int open(String path, int flags, int mode);
    @SaveError int close(int fd);
    @SaveError int dup(int fd);
    @SaveError long pread(int fd, Pointer buf, long count, long offset);
    @SaveError long pwrite(int fd, Pointer buf, long count, long offset);
    @SaveError int fallocate(int fd, int mode, long offset, long len);
    @SaveError int fsync(int fd);
    @SaveError int fdatasync(int fd);
    @SaveError int syncfs(int fd);
    @SaveError int ftruncate(int fd, long length);
    /** glibc 2.33+ exports fstat/fstatat as real symbols; the buffer is a kernel struct stat. */
    @SaveError int fstat(int fd, Pointer statbuf);
    @SaveError int fstatat(int dirfd, String path, Pointer statbuf, int flags);
    @SaveError int fstatvfs(int fd, Pointer statvfsbuf);
    @SaveError int unlinkat(int dirfd, String path, int flags);
    /** renameat(2) with flags (glibc 2.28): RENAME_NOREPLACE (1) fails with EEXIST rather than replace. */
    @SaveError int renameat2(int olddirfd, String oldpath, int newdirfd, String newpath, int flags);
    @SaveError int fchmodat(int dirfd, String path, int mode, int flags);
    @SaveError int fchmod(int fd, int mode);
    @SaveError int chmod(String path, int mode);
    @SaveError int fchown(int fd, int owner, int group);
    @SaveError int fchownat(int dirfd, String path, int owner, int group, int flags);
    @SaveError int utimensat(int dirfd, String path, Pointer times, int flags);
    @SaveError long lseek(int fd, long offset, int whence);
    @SaveError int mkdirat(int dirfd, String path, int mode);
    /** The calling thread's id (glibc 2.30+), for {@link #setpriority} on one thread. */
    int gettid();
    /** PRIO_PROCESS with a thread id sets that thread's nice value alone (Linux keeps one per thread). */
    @SaveError int setpriority(int which, int who, int prio);
    /** 1 if {@code fd} is a terminal (progress is shown only there). */
    int isatty(int fd);
    /** For systemd's notification socket (a unix datagram socket, which Java's channels cannot send to). */
    @SaveError int socket(int domain, int type, int protocol);
    @SaveError long sendto(int fd, Pointer buf, long len, int flags, Pointer addr, int addrlen);
}
