"""Compression: quantization and pruning primitives, and the simulated compressed model of a configuration."""
