"""A small LRU of rendered page parts, per worker process, bounded in count and in size."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["PageCache"]


class PageCache:
    """Keeps the most recently used `size` values, and no more than `max_chars` characters
    of them (a value alone over `max_item` is never kept); safe across a worker's threads.

    Counting alone would let 128 pages of a few megabytes each hold a worker's memory.
    """

    def __init__(self, size: int, max_chars: int = 32_000_000, max_item: int = 2_000_000) -> None:
        self.size = size
        self.max_chars = max_chars
        self.max_item = max_item
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """The value kept for a key, or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        """Keep a value, dropping the least recently used beyond the bounds."""
        length = len(value) if isinstance(value, str) else 0
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._chars -= len(old) if isinstance(old, str) else 0
            if length > self.max_item:
                return
            self._items[key] = value
            self._chars += length
            while len(self._items) > self.size or self._chars > self.max_chars:
                _key, dropped = self._items.popitem(last=False)
                self._chars -= len(dropped) if isinstance(dropped, str) else 0
