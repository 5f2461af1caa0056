"""What a benchmark hands back, and how it is printed."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Outcome:
    """The result of one benchmark.

    ``figures`` are (label, value) rows, printed in order; ``verdict`` is the
    one-line summary with the measured figures and the ratio; ``met`` says
    whether the ratio (or every check) reached ``goal``.
    """

    name: str
    title: str
    figures: list[tuple[str, str]]
    verdict: str
    goal: str
    met: bool
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        width = max((len(label) for label, _ in self.figures), default=0)
        lines = [f"== {self.name}: {self.title}"]
        lines += [f"   note: {note}" for note in self.notes]
        lines += [f"   {label.ljust(width)}  {value}" for label, value in self.figures]
        status = "MET" if self.met else "MISSED"
        lines.append(f"   RESULT {self.verdict} | goal {self.goal} | {status}")
        return "\n".join(lines)


def ms(nanoseconds: float) -> str:
    return f"{nanoseconds / 1e6:.2f} ms"


def seconds(nanoseconds: float) -> str:
    return f"{nanoseconds / 1e9:.2f} s"


def spread(samples: list[int]) -> str:
    """Median with the interquartile range, in milliseconds."""
    q1, median, q3 = statistics.quantiles(samples, n=4)
    return f"median {ms(median)}  (p25 {ms(q1)}, p75 {ms(q3)}, n={len(samples)})"
