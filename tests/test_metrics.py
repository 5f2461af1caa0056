"""The call-latency histogram reads as prometheus_client's own Histogram would."""

from __future__ import annotations

import prometheus_client

from plughost.metrics import Metrics

SAMPLED = dict.fromkeys(
    [
        "loaded_namespaces",
        "loaded_mods",
        "failed_mods",
        "tenants",
        "namespace_loads",
        "namespace_unloads",
        "namespace_evictions",
    ],
    0,
)


def _samples(text: str, name: str) -> list[str]:
    return [
        line.replace(name, "NAME")
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith(f"{name}_created")
    ]


def test_call_latency_matches_a_prometheus_histogram_of_the_same_values() -> None:
    metrics = Metrics(lambda: SAMPLED)
    registry = prometheus_client.CollectorRegistry()
    reference = prometheus_client.Histogram("reference_seconds", "x", registry=registry)
    for seconds in (0.0, 0.0001, 0.005, 0.0050001, 0.3, 2.5, 10.0, 99.0):
        metrics.calls.ok(seconds)
        reference.observe(seconds)
    ours = _samples(metrics.render().decode(), "plughost_agent_call_seconds")
    theirs = _samples(prometheus_client.generate_latest(registry).decode(), "reference_seconds")
    assert ours == theirs and len(ours) == 17  # 15 buckets with +Inf, count and sum


def test_calls_by_outcome_count_what_succeeded_and_what_failed() -> None:
    metrics = Metrics(lambda: SAMPLED)
    for seconds in (0.001, 0.2, 30.0):
        metrics.calls.ok(seconds)
    metrics.calls.error()

    text = metrics.render().decode()

    assert 'plughost_agent_calls_total{outcome="ok"} 3.0' in text
    assert 'plughost_agent_calls_total{outcome="error"} 1.0' in text
    assert "plughost_agent_call_seconds_count 3.0" in text
