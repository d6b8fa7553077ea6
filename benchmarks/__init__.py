"""carbonlink benchmarks: `benchmarks/run` measures limits, baselines and the pipeline in one run.

Every figure comes from real servers this package starts on free ports (tests/servers.py);
ratios compare figures of the same run, because absolute rates drift on a shared machine.
"""
