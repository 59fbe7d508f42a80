"""``python -m qtradeoff``: the same as the ``qtradeoff`` command."""

from qtradeoff.cli import main

raise SystemExit(main())
