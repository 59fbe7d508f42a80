"""CLI start-up: ``qtradeoff inspect`` and ``qtradeoff evaluate`` as whole processes against ``import torch``.

Each round runs, as fresh processes in an interleaved order (the order flips every round so that neither side
always follows the other): ``python -c "import torch"``, ``qtradeoff inspect sample_models/digits_cnn.safetensors``,
the same on a user's copy of it (the sample's tensors saved again with one more metadata entry: other bytes, so
it is test-loaded in the isolated loader process, which imports torch a second time, as every user file is; the
sample's own bytes, known by their sha256, are not) and ``qtradeoff evaluate digits_cnn --json``; then one
process that times ``import torch`` and two ``qtradeoff evaluate digits_cnn --json`` runs in a row inside it (the
first cold: qtradeoff's imports, the loader, the engine; the second warm: everything imported). Wall-clock
medians over ``--rounds`` are printed with the targets of issues 13 and 19: inspect within 1.5x of ``import
torch``; a first evaluation within twice a warm one plus ``import torch``. Nothing is asserted: the machine is
shared, so read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = "sample_models/digits_cnn.safetensors"
COMMANDS = {
    "import torch": ["-c", "import torch"],
    "inspect": ["-m", "qtradeoff.cli", "inspect", SAMPLE],
    "evaluate": ["-m", "qtradeoff.cli", "evaluate", "digits_cnn", "--json"],
}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _timed(args: list[str]) -> float:
    started = time.perf_counter()
    child = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True,
                           check=False)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({child.returncode}):\n{child.stderr}")
    return elapsed


def _in_process() -> None:
    """One process: time ``import torch``, then a cold and a warm ``qtradeoff evaluate digits_cnn --json``."""
    started = time.perf_counter()
    import torch  # noqa: F401

    import_torch = time.perf_counter() - started
    from qtradeoff.cli import main

    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["evaluate", "digits_cnn", "--json"])
        seconds.append(time.perf_counter() - started)
        if code != 0:
            raise SystemExit(f"evaluate failed with exit code {code}")
    print(json.dumps({"import_torch": import_torch, "cold": seconds[0], "warm": seconds[1],
                      "dynamo": "torch._dynamo" in sys.modules, "sympy": "sympy" in sys.modules}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="also print one JSON line with every figure")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        _in_process()
        return 0

    with tempfile.TemporaryDirectory(prefix="qtradeoff-startup-") as folder:
        return _measure(args, _user_copy(Path(folder)))


def _user_copy(folder: Path) -> Path:
    """The sample's tensors and metadata saved again with one more metadata entry (other bytes, same model)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(ROOT / SAMPLE), "pt") as handle:
        metadata = dict(handle.metadata() or {})
    path = folder / "my_digits_cnn.safetensors"
    save_file(load_file(str(ROOT / SAMPLE)), str(path), metadata={**metadata, "note": "a user's copy"})
    return path


def _measure(args: argparse.Namespace, user_file: Path) -> int:
    commands = {**COMMANDS, "inspect, user file": ["-m", "qtradeoff.cli", "inspect", str(user_file)]}
    runs: dict[str, list[float]] = {name: [] for name in commands}
    inside: list[dict] = []
    for round_ in range(args.rounds):
        order = list(commands) if round_ % 2 == 0 else list(reversed(commands))
        for name in order:
            runs[name].append(_timed(commands[name]))
        child = subprocess.run([sys.executable, __file__, "--in-process"], cwd=ROOT, env=_env(),
                               capture_output=True, text=True, check=False)
        if child.returncode != 0:
            raise SystemExit(f"in-process evaluation failed:\n{child.stderr}")
        inside.append(json.loads(child.stdout.strip().splitlines()[-1]))

    median = {name: statistics.median(values) for name, values in runs.items()}
    cold = statistics.median(r["cold"] for r in inside)
    warm = statistics.median(r["warm"] for r in inside)
    torch_inside = statistics.median(r["import_torch"] for r in inside)
    print(f"CLI start-up, wall seconds, median of {args.rounds} interleaved rounds, each a fresh process "
          f"(cpu: {os.cpu_count()} cores, shared)")
    for name, values in runs.items():
        print(f"  {name:18s} {median[name]:6.2f} s   (runs: {', '.join(format(v, '.2f') for v in values)})")
    inspect_ratio = median["inspect"] / median["import torch"]
    print(f"inspect / import torch: {inspect_ratio:.2f}x (target <= 1.5x)")
    print(f"inspect of a user's file / import torch: {median['inspect, user file'] / median['import torch']:.2f}x "
          "(the isolated loader's own import of torch overlaps this process's)")
    print(f"evaluate / import torch: {median['evaluate'] / median['import torch']:.2f}x")
    bound = 2 * warm + torch_inside
    print(f"in one process: import torch {torch_inside:.2f} s, first evaluate {cold:.2f} s, second (warm) "
          f"{warm:.2f} s; first / (2 x warm + import torch) = {cold / bound:.2f} (target <= 1)")
    print(f"torch._dynamo imported: {any(r['dynamo'] for r in inside)}; sympy imported: "
          f"{any(r['sympy'] for r in inside)}")
    if args.json:
        print("JSON " + json.dumps({"median_s": median, "runs_s": runs, "inspect_ratio": inspect_ratio,
                                    "evaluate_cold_s": cold, "evaluate_warm_s": warm,
                                    "import_torch_in_process_s": torch_inside, "cold_over_bound": cold / bound}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
