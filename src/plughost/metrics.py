"""Prometheus metrics of one network, in its own registry.

Counters and the call-latency histogram are updated where things happen (those of agent
calls, every call's, without a lock); gauges and the runtime's own counts are read at each
scrape.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

Sampler = Callable[[], dict[str, float]]


class _Sampled(Collector):
    """Values read from the network at each scrape: what is loaded now, and runtime counts."""

    def __init__(self, sample: Sampler) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        values = self._sample()
        for name in ("loaded_namespaces", "loaded_mods", "failed_mods", "tenants"):
            yield GaugeMetricFamily(f"plughost_{name}", name.replace("_", " "), value=values[name])
        for name in ("namespace_loads", "namespace_unloads", "namespace_evictions"):
            yield CounterMetricFamily(
                f"plughost_{name}", name.replace("_", " "), value=values[name]
            )


class _Calls(Collector):
    """Agent calls by outcome, and the latency of those that succeeded, counted without a
    lock and given to Prometheus at each scrape.

    Every agent call counts here, on the event loop (only the event loop's thread may
    call :meth:`ok` and :meth:`error`). prometheus_client's ``Counter`` and ``Histogram``
    take a lock at each update, and the histogram walks its buckets: some 5,000 of the
    68,000 instructions a warm call took (bench/RESULTS.md). A call that succeeded is
    one update of a list of buckets, whose total is the counter's ``ok``. Scraped, they
    read as those two metrics would, with the same default buckets.
    """

    def __init__(self) -> None:
        self._bounds = [bound for bound in Histogram.DEFAULT_BUCKETS if bound != math.inf]
        self._counts = [0] * (len(self._bounds) + 1)  # the last one: past every bound
        self._sum = 0.0
        self._errors = 0

    def ok(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def error(self) -> None:
        self._errors += 1

    def collect(self) -> Iterator[Metric]:
        cumulative = list(itertools.accumulate(self._counts))
        calls = CounterMetricFamily(
            "plughost_agent_calls", "agent calls by outcome", labels=["outcome"]
        )
        calls.add_metric(["ok"], cumulative[-1])
        calls.add_metric(["error"], self._errors)
        yield calls
        latency = HistogramMetricFamily("plughost_agent_call_seconds", "agent call latency")
        buckets = [
            (str(bound), count) for bound, count in zip(self._bounds, cumulative, strict=False)
        ]
        latency.add_metric([], [*buckets, ("+Inf", cumulative[-1])], sum_value=self._sum)
        yield latency


class Metrics:
    """The metrics of one network; :meth:`render` gives the Prometheus text format."""

    def __init__(self, sample: Sampler) -> None:
        self.registry = CollectorRegistry()
        self.calls = _Calls()
        self.registry.register(self.calls)
        self.deploys = Counter(
            "plughost_deploys", "deploys by outcome", ["outcome"], registry=self.registry
        )
        self.events = Counter(
            "plughost_events", "events by outcome", ["outcome"], registry=self.registry
        )
        self.mod_loads = Counter(
            "plughost_mod_loads", "mod loads by outcome", ["outcome"], registry=self.registry
        )
        self.mod_unloads = Counter("plughost_mod_unloads", "mod unloads", registry=self.registry)
        self.registry.register(_Sampled(sample))

    def render(self) -> bytes:
        return generate_latest(self.registry)
