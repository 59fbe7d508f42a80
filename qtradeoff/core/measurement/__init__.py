"""Measurement: exact memory, latency (real kernels and roofline estimate), real int8 models, Pareto frontiers."""
