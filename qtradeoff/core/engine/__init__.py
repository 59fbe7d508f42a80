"""The evaluation engine: one model and its data, every cache, and ``evaluate(config)`` yielding a Result."""
