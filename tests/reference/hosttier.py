"""Plain-Python host KV tier (vLLM ``CPUOffloadingManager`` + ``LRUCachePolicy``, as
``oracle/engine/README.md`` "KV offload" simplifies them): an ordered dict from block hash to
nothing, least recently used first."""

from __future__ import annotations

from collections import OrderedDict


class HostTier:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.lru: OrderedDict[int, None] = OrderedDict()  # first = evicted first

    def match(self, hashes: list[int]) -> int:
        """How many leading ``hashes`` are held (stops at the first miss)."""
        k = 0
        while k < len(hashes) and hashes[k] in self.lru:
            k += 1
        return k

    def touch(self, hashes: list[int]) -> None:
        """Held ``hashes`` become most recently used, the last first (the first ends newest)."""
        for h in reversed(hashes):
            self.lru.move_to_end(h)

    def store(self, hashes: list[int]) -> tuple[int, int] | None:
        """Offer ``hashes``: store the new ones, evicting the least recently used hashes not in
        the offer; all end most recently used as in :meth:`touch`. Returns (stored, evicted),
        or None when the new ones do not fit beside the held ones (nothing changes)."""
        new = [h for h in hashes if h not in self.lru]
        if len(new) > self.capacity - (len(hashes) - len(new)):
            return None
        offer = set(hashes)
        evicted = 0
        while len(self.lru) + len(new) > self.capacity:
            victim = next(h for h in self.lru if h not in offer)
            del self.lru[victim]
            evicted += 1
        for h in reversed(hashes):
            self.lru[h] = None
            self.lru.move_to_end(h)
        return len(new), evicted

    def check_invariants(self) -> None:
        assert len(self.lru) <= self.capacity, "host tier over capacity"
