"""Benchmark harness: metrics latency and throughput, and how the cost grows with the data.

Run ``python -m bench`` (``make bench``); ``python -m bench --help`` lists the knobs. The
report goes to ``bench/results/latest.md`` with a plot in ``bench/results/latency.png``.

Pure parts (statistics, ratios, explain digging, Markdown) live in ``stats``, ``model``,
``explain`` and ``report``; the I/O (database, dataset, service, measurements, plot) in
the other modules.
"""
