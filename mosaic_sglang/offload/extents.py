"""`ExtentAllocator`: first-fit allocation of contiguous row ranges (`Extent`) in a row space.

Used twice by the host tier: for the physical rows of the `HostKVStore` and for the tier's *virtual*
row space (the rows the radix tree holds), whose extents keep their place while the cluster behind
them moves between the host store and the spill tier.

Free list sorted by offset; `free` coalesces with both neighbours, so it never holds two adjacent
extents. `allocate` is O(free extents) (linear first fit, lowest offset first: large holes stay at the
high end), `free` O(log F) plus a list insert. No compaction: callers hold extents by value.
"""

from __future__ import annotations

import bisect
from typing import NamedTuple, Optional

__all__ = ["Extent", "ExtentAllocator"]


class Extent(NamedTuple):
    """A contiguous range of rows ``[start, start + length)`` (the same in every layer)."""

    start: int
    length: int


class ExtentAllocator:
    """Free-list allocator over ``capacity`` rows.

    Example:
        >>> rows = ExtentAllocator(8)
        >>> a, b = rows.allocate(3), rows.allocate(2)
        >>> rows.free(a); rows.allocate(4), rows.allocate(3)  # two holes of 3: fragmented
        (None, Extent(start=0, length=3))
    """

    def __init__(self, capacity: int) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"ExtentAllocator: capacity: expected an integer >= 1, got {capacity!r}")
        self.capacity = capacity
        self._free_starts: list[int] = [0]  # sorted; parallel to _free_lens; never two adjacent extents
        self._free_lens: list[int] = [capacity]
        self._used: dict[int, int] = {}  # start -> length of every allocated extent
        self._num_free = capacity

    @property
    def num_free(self) -> int:
        """Free rows (in any number of holes)."""
        return self._num_free

    @property
    def num_used(self) -> int:
        return self.capacity - self._num_free

    @property
    def num_extents(self) -> int:
        return len(self._used)

    @property
    def largest_free(self) -> int:
        """The largest request `allocate` can satisfy now."""
        return max(self._free_lens, default=0)

    def length_of(self, start: int) -> Optional[int]:
        """Length of the allocated extent starting at ``start``, or None."""
        return self._used.get(start)

    def allocate(self, length: int) -> Optional[Extent]:
        """``length`` contiguous rows at the lowest offset that fits, or None when no hole is large
        enough (``num_free`` may still be >= ``length``: fragmentation)."""
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"ExtentAllocator.allocate: length: expected an integer >= 1, got {length!r}")
        for i, hole in enumerate(self._free_lens):
            if hole >= length:
                start = self._free_starts[i]
                if hole == length:
                    del self._free_starts[i], self._free_lens[i]
                else:
                    self._free_starts[i] += length
                    self._free_lens[i] -= length
                self._used[start] = length
                self._num_free -= length
                return Extent(start, length)
        return None

    def free(self, extent: Extent) -> None:
        """Return an allocated extent; coalesces with free neighbours.

        Raises:
            ValueError: the extent is not allocated exactly as given (double free, a never-allocated
                range, or a wrong length): freeing it would corrupt the free list.
        """
        start, length = int(extent[0]), int(extent[1])
        if self._used.get(start) != length:
            state = "not allocated (double free?)" if start not in self._used else f"allocated with length {self._used[start]}"
            raise ValueError(f"free: extent (start={start}, length={length}) is {state}")
        del self._used[start]
        self._num_free += length
        i = bisect.bisect_left(self._free_starts, start)
        merge_prev = i > 0 and self._free_starts[i - 1] + self._free_lens[i - 1] == start
        merge_next = i < len(self._free_starts) and start + length == self._free_starts[i]
        if merge_prev and merge_next:
            self._free_lens[i - 1] += length + self._free_lens[i]
            del self._free_starts[i], self._free_lens[i]
        elif merge_prev:
            self._free_lens[i - 1] += length
        elif merge_next:
            self._free_starts[i] = start
            self._free_lens[i] += length
        else:
            self._free_starts.insert(i, start)
            self._free_lens.insert(i, length)

    def extents(self) -> list[Extent]:
        """Every allocated extent, in offset order."""
        return [Extent(s, n) for s, n in sorted(self._used.items())]

    def check_integrity(self) -> None:
        """Raise ``AssertionError`` naming the first broken invariant: free + used == capacity, free list
        sorted and fully coalesced, no overlap between any two extents (free or used), all in range."""
        used = sum(self._used.values())
        free = sum(self._free_lens)
        assert free == self._num_free, f"free-count drift: list {free} != counter {self._num_free}"
        assert free + used == self.capacity, f"free {free} + used {used} != capacity {self.capacity}"
        assert len(self._free_starts) == len(self._free_lens), "free list arrays out of sync"
        for a, b, la in zip(self._free_starts, self._free_starts[1:], self._free_lens):
            assert a + la < b, f"free list unsorted, overlapping or not coalesced at {a}+{la} vs {b}"
        spans = sorted([(s, n, "used") for s, n in self._used.items()]
                       + [(s, n, "free") for s, n in zip(self._free_starts, self._free_lens)])
        end = 0
        for s, n, kind in spans:
            assert n >= 1, f"empty {kind} extent at {s}"
            assert s == end, f"{'overlap' if s < end else 'gap'} at row {s} (previous extent ends at {end})"
            end = s + n
        assert end == self.capacity, f"extents end at {end}, capacity {self.capacity}"
