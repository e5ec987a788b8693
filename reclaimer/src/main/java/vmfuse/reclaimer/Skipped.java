package vmfuse.reclaimer;

/** Why bytes of a notice were not punched. */
public enum Skipped {
    /** Not a whole 4 KiB block of the range. */
    PARTIAL_BLOCK,
    /** Written after the notice's fence token, before the notice came (qcow2: or since). */
    WRITTEN_AFTER_FENCE,
    /** Written while the notice waited (raw). */
    WRITTEN_WHILE_PENDING,
    /** qcow2 with no QEMU: not a data cluster this image alone owns (a snapshot's, compressed, unallocated). */
    NOT_OWNED,
    /** qcow2: the token's bitmap could not prove what was written since it (gone, inconsistent), or the image's metadata is corrupt: dropped. */
    FENCE_LOST,
    /** Restored at start, but the image was not watched without a gap since: dropped (see NoticeLog). */
    UNWATCHED
}
