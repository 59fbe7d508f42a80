"""Search: per-layer sensitivity, automatic search strategies, and resumable headless sweeps."""
