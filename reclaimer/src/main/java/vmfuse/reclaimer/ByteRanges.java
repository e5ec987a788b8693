package vmfuse.reclaimer;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/** A set of byte ranges kept as disjoint [from, to) intervals, merged as they are added. Not thread-safe. */
final class ByteRanges {
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

    /** Removes [from, to) and returns the parts that were in the set. */
    List<Range> remove(long from, long to) {
        List<Range> gone = new ArrayList<>();
        if (from >= to) {
            return gone;
        }
        Map.Entry<Long, Long> e = ranges.floorEntry(from);
        if (e == null || e.getValue() <= from) {
            e = ranges.higherEntry(from);
        }
        while (e != null && e.getKey() < to) {
            long s = e.getKey();
            long t = e.getValue();
            ranges.remove(s);
            long cs = Math.max(s, from);
            long ct = Math.min(t, to);
            gone.add(Range.between(cs, ct));
            if (s < cs) {
                ranges.put(s, cs);
            }
            if (ct < t) {
                ranges.put(ct, t);
            }
            e = ranges.higherEntry(ct - 1);
        }
        return gone;
    }

    /** The parts of [from, to) in the set. */
    List<Range> intersect(long from, long to) {
        List<Range> out = new ArrayList<>();
        Map.Entry<Long, Long> e = ranges.floorEntry(from);
        if (e == null || e.getValue() <= from) {
            e = ranges.higherEntry(from);
        }
        while (e != null && e.getKey() < to) {
            long cs = Math.max(e.getKey(), from);
            long ct = Math.min(e.getValue(), to);
            if (ct > cs) {
                out.add(Range.between(cs, ct));
            }
            e = ranges.higherEntry(e.getKey());
        }
        return out;
    }

    boolean isEmpty() {
        return ranges.isEmpty();
    }

    /** How many disjoint ranges: what the set costs in memory. */
    int count() {
        return ranges.size();
    }

    long bytes() {
        long n = 0;
        for (Map.Entry<Long, Long> e : ranges.entrySet()) {
            n += e.getValue() - e.getKey();
        }
        return n;
    }

    /** The ranges in order. */
    List<Range> list() {
        List<Range> out = new ArrayList<>(ranges.size());
        ranges.forEach((f, t) -> out.add(Range.between(f, t)));
        return out;
    }

    /** A set of the given ranges. */
    static ByteRanges of(List<Range> list) {
        ByteRanges r = new ByteRanges();
        for (Range x : list) {
            r.add(x.offset(), x.end());
        }
        return r;
    }
}
