"""Back-pressure: a per-user rate limit and a bounded count of analyses in flight."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0


class RateLimiter:
    """At most ``per_minute`` events per key in any sliding minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._events: dict[int, deque[float]] = {}

    def retry_after(self, key: int) -> float:
        """0 and the event is counted, or the seconds to wait before one more is allowed."""
        now = self._clock()
        events = self._events.setdefault(key, deque())
        while events and now - events[0] >= WINDOW_SECONDS:
            events.popleft()
        if len(events) >= self.per_minute:
            return WINDOW_SECONDS - (now - events[0])
        events.append(now)
        return 0.0


class Slots:
    """A bounded number of analyses queued or running; a full house refuses rather than waits."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0

    def take(self) -> bool:
        if self.used >= self.size:
            return False
        self.used += 1
        return True

    def give(self) -> None:
        self.used -= 1
