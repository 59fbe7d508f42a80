"""Post-training algorithms beside round-to-nearest: lookup-table (k-means) quantization, cross-layer
equalization, SmoothQuant and activation-based pruning. Each module keeps its pure tensor primitives apart from
the few helpers that read a model; :class:`~qtradeoff.core.compression.compress.Compressor` applies them."""
