"""Agent calls per tenant over the last minutes: rates, errors and latency quantiles.

Prometheus (:mod:`plughost.metrics`) counts calls for the whole network,
since the start; the operator page charts each tenant's recent calls. Each
tenant keeps one bucket a second, for :data:`KEEP_SECONDS`: how many calls
ended, how many failed, and a histogram of their durations in bins a quarter
apart (so a quantile is known to within 25 %). Recording a call is a few
dictionary and list operations on the event loop's thread, which alone
records and reads.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

KEEP_SECONDS = 600
_SMALLEST = 1e-5  # seconds: the upper bound of the first bin
_GROWTH = 1.25
_BINS = 80  # up to about 7.5 minutes; a longer call counts in the last bin


@dataclass
class _Second:
    at: int
    calls: int = 0
    errors: int = 0
    bins: list[int] = field(default_factory=lambda: [0] * _BINS)


def _upper(index: int) -> float:
    return _SMALLEST * _GROWTH**index


_BOUNDS = [_upper(index) for index in range(_BINS - 1)]  # past the last: the last bin


class CallStats:
    """Each tenant's calls, a bucket a second, for the last :data:`KEEP_SECONDS`."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._tenants: dict[str, deque[_Second]] = {}
        self._current: dict[str, _Second] = {}  # each tenant's latest second, the one counted in

    def record(self, tenant: str, seconds: float, ok: bool) -> None:
        """Count one call of ``tenant`` that took ``seconds`` and succeeded or not."""
        now = int(self._clock())
        bucket = self._current.get(tenant)
        if bucket is None or bucket.at != now:  # once a second a tenant is called in
            bucket = self._current[tenant] = _Second(now)
            self._tenants.setdefault(tenant, deque(maxlen=KEEP_SECONDS)).append(bucket)
        bucket.calls += 1
        if not ok:
            bucket.errors += 1
        bucket.bins[bisect.bisect_left(_BOUNDS, seconds)] += 1

    def forget(self, tenant: str) -> None:
        """A removed tenant: its calls are no one's to chart."""
        self._tenants.pop(tenant, None)
        self._current.pop(tenant, None)

    def series(self, tenant: str, window: int = 300, step: int = 5) -> dict[str, list[Any]]:
        """The tenant's last ``window`` seconds in steps of ``step``: for each step its end
        (``at``, Unix seconds), ``calls_per_s``, ``errors_per_s``, ``p50_ms`` and ``p99_ms``
        (``None`` for a step without calls)."""
        window = max(step, min(window, KEEP_SECONDS))
        now = int(self._clock())
        steps = window // step
        first = now - steps * step + 1  # whole steps only: the last one ends now
        calls = [0] * steps
        errors = [0] * steps
        bins = [[0] * _BINS for _ in range(steps)]
        for bucket in self._tenants.get(tenant, ()):
            if bucket.at < first:
                continue
            index = min(steps - 1, (bucket.at - first) // step)
            calls[index] += bucket.calls
            errors[index] += bucket.errors
            merged = bins[index]
            for position, count in enumerate(bucket.bins):
                if count:
                    merged[position] += count
        return {
            "at": [first + (index + 1) * step - 1 for index in range(steps)],
            "calls_per_s": [count / step for count in calls],
            "errors_per_s": [count / step for count in errors],
            "p50_ms": [_quantile(each, 0.5) for each in bins],
            "p99_ms": [_quantile(each, 0.99) for each in bins],
        }


def _quantile(bins: list[int], q: float) -> float | None:
    total = sum(bins)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(bins):
        seen += count
        if seen >= rank:
            return round(_upper(index) * 1000, 3)
    return round(_upper(_BINS - 1) * 1000, 3)
