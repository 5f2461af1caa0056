"""Prometheus metrics of one network, in its own registry.

Counters and the call-latency histogram are updated where things happen;
gauges and the runtime's own counts are read at each scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
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


class Metrics:
    """The metrics of one network; :meth:`render` gives the Prometheus text format."""

    def __init__(self, sample: Sampler) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "plughost_agent_calls", "agent calls by outcome", ["outcome"], registry=self.registry
        )
        self.call_seconds = Histogram(
            "plughost_agent_call_seconds", "agent call latency", registry=self.registry
        )
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
