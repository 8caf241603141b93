"""Progress bars for the commands that run for minutes (``sera evaluate``, ``sera train``).

Drawn with tqdm on a terminal only: in CI logs and pipes nothing is drawn (tqdm's ``disable=None``),
and the INFO log lines say how far a run got instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def bar(total: int, description: str, unit: str) -> tqdm:
    """A bar to ``update()`` by hand, for work whose steps finish elsewhere (worker processes)."""
    return tqdm(total=total, desc=description, unit=unit, disable=None, leave=False, dynamic_ncols=True)


def progress(items: Iterable[T], description: str, unit: str = "clip", total: int | None = None) -> Iterator[T]:
    """``items``, drawing a bar as they are consumed."""
    yield from tqdm(items, desc=description, unit=unit, total=total, disable=None, leave=False, dynamic_ncols=True)
