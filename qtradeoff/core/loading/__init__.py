"""Loading: model files (safely, in an isolated child), datasets, and the layer inventory of a loaded model."""
