"""Benchmark harness (``make bench``): metrics latency against history size, throughput,
the rollup consumer under writes and the rollup build, on the embedded database with the
service as a real process. ``stats`` and ``report`` are pure; ``harness`` does the I/O;
``run`` is the command. The report goes to ``bench/results/latest.md``."""
