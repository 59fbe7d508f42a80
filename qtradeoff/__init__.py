"""qtradeoff: explore the accuracy–speed–size trade-offs of quantizing and pruning a neural network."""

__version__ = "0.1.0"
