"""In-memory LRU caches: loaded twins, and immutable results (predictions along stored histories).

Keys are ``(subject, version)``: a version never changes once stored, so cached entries never go
stale. Aliases are resolved against the store on every request, so when the ``serving`` alias
moves (a twin update finished) the next request loads the new version and the old one ages out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from twin.persist.store import Twin, TwinStore


class TwinCache:
    """Loaded twins, least recently used evicted first.

    Args:
        store: where twins are loaded from.
        capacity: twins kept in memory.
    """

    def __init__(self, store: TwinStore, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.store = store
        self.capacity = capacity
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, int], Twin] = OrderedDict()
        self.hits = 0
        self.loads = 0

    def get(self, subject: str, version: int) -> Twin:
        """The twin ``subject`` v``version`` (loaded from the store on a miss).

        Raises:
            TwinNotFoundError: no such version.
            ModelFileError: its weights file is missing or corrupt.
        """
        key = (subject, int(version))
        with self._lock:
            twin = self._items.get(key)
            if twin is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return twin
        twin = self.store.load_twin(subject, version=int(version))  # outside the lock: slow
        with self._lock:
            self.loads += 1
            self._items[key] = twin
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return twin

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items




class ResultCache:
    """A thread-safe LRU of immutable results, bounded by a total cost (e.g. trials held).

    Used for predictions along stored histories: for a given twin version and the same stored
    sessions (same hashes) the result never changes, and dashboards ask for it repeatedly.

    Args:
        max_cost: largest total cost kept; an entry costing more is not cached.
    """

    def __init__(self, max_cost: int) -> None:
        if max_cost < 0:
            raise ValueError("max_cost must be >= 0")
        self.max_cost = max_cost
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._cost = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> object | None:
        """The cached value, or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: object, cost: int) -> None:
        """Cache ``value`` (evicting the least recently used entries to stay within the cost)."""
        if cost > self.max_cost:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._cost -= old[1]
            self._items[key] = (value, cost)
            self._cost += cost
            while self._cost > self.max_cost:
                _, (_, c) = self._items.popitem(last=False)
                self._cost -= c

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


__all__ = ["ResultCache", "TwinCache"]
