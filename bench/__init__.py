"""Benchmarks of plughost, run with ``python -m bench [group ...]``; not part of the tests.

Each group is a module (``bench.loader``) whose ``BENCHMARKS`` each return an
:class:`bench.report.Outcome` with a ratio against a baseline measured in the
same run. Figures of the latest run are in ``bench/RESULTS.md``.
"""
