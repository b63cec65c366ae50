# SPDX-License-Identifier: GPL-2.0-or-later
"""Sorted, disjoint, half-open byte ranges [start, end)."""

import bisect


def normalise(ranges):
    """Sorts and merges overlapping or touching ranges; drops empty ones."""
    out = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1][1] = end
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def total(ranges):
    return sum(e - s for s, e in ranges)


def clip(ranges, lo, hi):
    """The parts of @ranges inside [lo, hi)."""
    out = []
    for s, e in ranges:
        s, e = max(s, lo), min(e, hi)
        if s < e:
            out.append((s, e))
    return out


def subtract(ranges, holes):
    """@ranges minus @holes (both normalised)."""
    out = []
    j = 0
    for s, e in ranges:
        while j < len(holes) and holes[j][1] <= s:
            j += 1
        k = j
        cur = s
        while k < len(holes) and holes[k][0] < e:
            hs, he = holes[k]
            if hs > cur:
                out.append((cur, hs))
            cur = max(cur, he)
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


class RangeSet:
    """Normalised ranges with fast overlap queries (bisect on the ends)."""

    def __init__(self, ranges):
        self.ranges = normalise(ranges)
        self.starts = [s for s, _ in self.ranges]
        self.ends = [e for _, e in self.ranges]

    def __bool__(self):
        return bool(self.ranges)

    def total(self):
        return total(self.ranges)

    def overlaps(self, start, end):
        """The pieces of the set inside [start, end), in order."""
        i = bisect.bisect_right(self.ends, start)
        out = []
        n = len(self.starts)
        while i < n and self.starts[i] < end:
            s, e = max(self.starts[i], start), min(self.ends[i], end)
            if s < e:
                out.append((s, e))
            i += 1
        return out

    def touches(self, start, end):
        i = bisect.bisect_right(self.ends, start)
        return i < len(self.starts) and self.starts[i] < end
