package vmfuse.journal;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * A set of block numbers kept as disjoint ranges [from, to), merged as they are added. Not
 * thread-safe. (The reclaimer's ByteRanges is its twin over bytes; the two modules share nothing
 * below durable, and twenty lines do not make a module.)
 */
final class BlockRanges {
    /** from -> to (exclusive); ranges neither overlap nor touch. */
    private final TreeMap<Long, Long> ranges = new TreeMap<>();

    void add(long from, long to) {
        if (from >= to) {
            return;
        }
        Map.Entry<Long, Long> before = ranges.floorEntry(from);
        if (before != null && before.getValue() >= from) {
            from = before.getKey();
            to = Math.max(to, before.getValue());
        }
        Map.Entry<Long, Long> next;
        while ((next = ranges.ceilingEntry(from)) != null && next.getKey() <= to) {
            to = Math.max(to, next.getValue());
            ranges.remove(next.getKey());
        }
        ranges.put(from, to);
    }

    void addAll(BlockRanges other) {
        other.ranges.forEach(this::add);
    }

    boolean contains(long block) {
        Map.Entry<Long, Long> e = ranges.floorEntry(block);
        return e != null && block < e.getValue();
    }

    boolean isEmpty() {
        return ranges.isEmpty();
    }

    /** The disjoint ranges held. */
    int size() {
        return ranges.size();
    }

    void clear() {
        ranges.clear();
    }

    /** Blocks {@code [from, to)}. */
    record Span(long from, long to) {}

    /** The ranges in order. */
    List<Span> list() {
        List<Span> out = new ArrayList<>(ranges.size());
        ranges.forEach((f, t) -> out.add(new Span(f, t)));
        return out;
    }
}
