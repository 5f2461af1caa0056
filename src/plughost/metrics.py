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


class _Latency(Collector):
    """A latency histogram observed without a lock, given to Prometheus at each scrape.

    Every agent call observes one, on the event loop. prometheus_client's
    ``Histogram`` takes a lock and walks its buckets at each observation, about
    1.3 µs: a quarter of what a warm call adds. This one counts per bucket in a
    list (only the event loop's thread may call :meth:`observe`) and yields the
    same histogram, with the same default buckets, when scraped.
    """

    def __init__(self, name: str, documentation: str) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = [bound for bound in Histogram.DEFAULT_BUCKETS if bound != math.inf]
        self._counts = [0] * (len(self._bounds) + 1)  # the last one: past every bound
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation)
        cumulative = list(itertools.accumulate(self._counts))
        buckets = [
            (str(bound), count) for bound, count in zip(self._bounds, cumulative, strict=False)
        ]
        family.add_metric([], [*buckets, ("+Inf", cumulative[-1])], sum_value=self._sum)
        yield family


class _LoopCounter(Collector):
    """A counter by one label, counted without a lock, given to Prometheus at each scrape.

    Every agent call counts one, on the event loop: prometheus_client's ``Counter`` takes a
    lock at each ``inc``, some 3,500 of the 68,000 instructions a warm call took
    (bench/RESULTS.md). Only the event loop's thread may call :meth:`inc`.
    """

    def __init__(self, name: str, documentation: str, label: str, values: list[str]) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._counts = dict.fromkeys(values, 0)

    def inc(self, value: str) -> None:
        self._counts[value] += 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, count in self._counts.items():
            family.add_metric([value], count)
        yield family


class Metrics:
    """The metrics of one network; :meth:`render` gives the Prometheus text format."""

    def __init__(self, sample: Sampler) -> None:
        self.registry = CollectorRegistry()
        self.calls = _LoopCounter(
            "plughost_agent_calls", "agent calls by outcome", "outcome", ["ok", "error"]
        )
        self.registry.register(self.calls)
        self.call_seconds = _Latency("plughost_agent_call_seconds", "agent call latency")
        self.registry.register(self.call_seconds)
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
