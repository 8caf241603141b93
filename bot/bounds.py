"""Bounds on numeric settings, declared beside the field they bound.

``bounded`` marks a dataclass field of the config (or of a plugin's ``Options``) with the values it
may take; ``sera.config.build`` checks them when the file is read, so ``workers: 0`` or a speech
threshold of 7 is refused with the file and key named, instead of failing later inside the bot.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

BOUNDS = "sera.bounds"  # the key under which a field's metadata carries its Bounds


@dataclass(frozen=True)
class Bounds:
    min: float | None = None  # inclusive
    max: float | None = None  # inclusive
    above: float | None = None  # exclusive: for durations and sizes that must be positive

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of bounds, in words; None when it is fine."""
        if self.above is not None and not value > self.above:
            return f"more than {self.above:g}" + (f" and at most {self.max:g}" if self.max is not None else "")
        if self.min is not None and self.max is not None and not self.min <= value <= self.max:
            return f"between {self.min:g} and {self.max:g}"
        if self.min is not None and value < self.min:
            return f"at least {self.min:g}"
        if self.max is not None and value > self.max:
            return f"at most {self.max:g}"
        return None


def bounded(default: Any, *, min: float | None = None, max: float | None = None, above: float | None = None) -> Any:
    """A dataclass field with a default and the range its value must lie in."""
    return dataclasses.field(default=default, metadata={BOUNDS: Bounds(min, max, above)})
