"""Back-pressure: a per-user rate limit, a per-user cap on work in flight, a bounded count overall.

Together they keep one account (or a few) from filling the queue for everyone: each user has at most
``user_in_flight`` notes being analysed and ``user_rate_per_minute`` started per minute, and the whole
bot at most ``queue_size``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0
PRUNE_EVERY = 1_000  # calls between sweeps of users who have been quiet for a minute


class RateLimiter:
    """At most ``per_minute`` events per key in any sliding minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._events: dict[int, deque[float]] = {}
        self._calls = 0

    def retry_after(self, key: int) -> float:
        """0 and the event is counted, or the seconds to wait before one more is allowed."""
        now = self._clock()
        self._calls += 1
        if self._calls % PRUNE_EVERY == 0:
            self._prune(now)
        events = self._events.setdefault(key, deque())
        while events and now - events[0] >= WINDOW_SECONDS:
            events.popleft()
        if len(events) >= self.per_minute:
            return WINDOW_SECONDS - (now - events[0])
        events.append(now)
        return 0.0

    def __len__(self) -> int:
        """How many users the limiter remembers."""
        return len(self._events)

    def _prune(self, now: float) -> None:
        """Forget users whose last event is over a minute old: the table stays as big as the last minute."""
        quiet = [key for key, events in self._events.items() if not events or now - events[-1] >= WINDOW_SECONDS]
        for key in quiet:
            del self._events[key]


class InFlight:
    """At most ``per_user`` analyses of one user queued or running at once."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._count: dict[int, int] = {}

    def take(self, key: int) -> bool:
        if self._count.get(key, 0) >= self.per_user:
            return False
        self._count[key] = self._count.get(key, 0) + 1
        return True

    def give(self, key: int) -> None:
        left = self._count[key] - 1
        if left:
            self._count[key] = left
        else:
            del self._count[key]


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
