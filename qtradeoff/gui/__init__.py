"""The desktop app of qtradeoff: PySide6 widgets, the worker thread and the live Pareto plot. No tensor math here."""
