"""Verification of an exported file in a fresh process, and the :class:`ExportReport` that says how it went.

The file is reloaded by its format's standalone runner (``runners/run_*.py``) in a new Python process, run on the
evaluation inputs, and compared with the simulated model of the same configuration: accuracy (with its 95 %
Wilson interval) or, without labels, agreement and SQNR against the simulated outputs; the file's size against the
counted ``weight_bytes``; the latency the runner measured. A check outside its bound is a failure listed in the
report (``passed`` False), never dropped. With labels, a paired comparison says whether an accuracy difference
is real: the samples only the file gets right, those only the simulation does, and the exact McNemar p-value.
On the MobileNets a few such flips are expected: even torch.ao's own float emulation of the exported int8 graph
(same scales and rounding points) is 20-24 dB from the kernels' outputs, its 1-code ties growing layer by layer.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from qtradeoff.core.measurement.realquant import ACTIVATION_BITS_NO_VNNI

# int8 kernels vs the simulation: accuracy within this many points (DESIGN: "The simulation must agree with reality").
ACCURACY_BOUND_POINTS = 0.5
# ...and their outputs at least this close to the simulated outputs (SQNR in dB): a chosen bound, not a measured
# one. Measured: digits_mlp W8A8 20.5 dB (int8 requantization between layers rounds differently from the fp32
# simulation); digits_cnn W8A8 on an AVX2 CPU without VNNI 6.3 dB (fbgemm's saturating u8*s8 pairs, see the
# report), which must fail.
INT8_SQNR_BOUND_DB = 15.0
# "exact" formats (packed) must reproduce the simulated outputs up to float rounding: max |difference| at most
# this fraction of the largest simulated output (batched kernels may sum in another order than the simulation's).
EXACT_RELATIVE_TOLERANCE = 1e-4
RUNNER_TIMEOUT_S = 900.0
AS_RUN_WHY = (f"this CPU's int8 kernels run activations on {ACTIVATION_BITS_NO_VNNI} bits (no VNNI: their 16-bit "
              "pair sums would saturate at 8), so the int8 file computes this configuration, not the configured one")
RUN_ALL = Path(__file__).resolve().parent / "runners" / "run_all.py"  # several files, one process (verify_many)
# The bootstrap of a standalone runner: qtradeoff cannot be imported, which proves the file runs without it.
_STANDALONE = ("import runpy, sys; sys.modules['qtradeoff'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")


@dataclass(frozen=True)
class ExportReport:
    """What was written and how its verification went (JSON-safe through :meth:`to_dict`)."""

    format: str
    file: str
    file_bytes: int
    weight_bytes: int  # the counted weight storage of the configuration (memory accounting)
    fp32_file_bytes: int  # the model file the configuration was applied to
    eval_samples: int
    labelled: bool
    simulated: dict  # accuracy, accuracy_ci95, agreement (with fp32), sqnr_db (vs fp32), from the engine
    exported: dict  # the same figures for the reloaded file, plus agreement/sqnr/max_abs_diff vs simulated
    runtime: dict  # runner's JSON: runtime, version, threads, latency_ms per batch size
    checks: dict  # name -> {"value": .., "bound": .., "ok": bool}
    failures: tuple[str, ...]
    verified: bool  # False with --no-verify: only the size was checked
    note: str = ""
    config: dict = field(default_factory=dict)
    # the simulation of what the real int8 model computes when that differs from the configuration (see
    # realquant.as_executed; {} when it does not), for information: the checks are against ``simulated``
    simulated_as_run: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def size_ratio(self) -> float:
        """File bytes over the fp32 model file's bytes."""
        return self.file_bytes / self.fp32_file_bytes if self.fp32_file_bytes else math.nan

    def to_dict(self) -> dict:
        out = asdict(self)
        out["failures"] = list(self.failures)
        out["passed"] = self.passed
        out["size_ratio"] = None if math.isnan(self.size_ratio) else self.size_ratio
        return _json_safe(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> ExportReport:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["failures"] = tuple(fields.get("failures", ()))
        return cls(**fields)



def runner_inputs(inputs) -> np.ndarray:
    """The evaluation inputs as the runners read them: float32 for float data, integer ids (token models) and
    booleans kept in their own dtype."""
    array = np.asarray(inputs.numpy() if hasattr(inputs, "numpy") else inputs)
    return np.ascontiguousarray(array, dtype=np.float32 if array.dtype.kind == "f" else array.dtype)

def report_path(out: str | Path) -> Path:
    """Where the report of the export at ``out`` is written: ``OUT.verify.json``."""
    return Path(f"{out}.verify.json")


def _json_safe(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else (None if value > 0 else -999.0)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def run_runner(runner: Path, model: Path, inputs: np.ndarray, *, standalone: bool, threads: int | None = None,
               latency_batches: tuple[int, ...] = (1, 32), repeats: int = 20,
               should_stop: Callable[[], bool] = lambda: False,
               timeout: float = RUNNER_TIMEOUT_S, extra_args: tuple[str, ...] = ()) -> tuple[np.ndarray, dict] | None:
    """Run ``runner`` on ``model`` and ``inputs`` in a fresh process: ``(outputs, runner's JSON)``, None when
    stopped. ``standalone`` runs it with qtradeoff made unimportable. Raises ExportError when the runner fails."""
    with tempfile.TemporaryDirectory(prefix="qtradeoff-verify-") as folder:
        inputs_file, outputs_file = Path(folder) / "inputs.npy", Path(folder) / "outputs.npy"
        np.save(inputs_file, runner_inputs(inputs))
        args = [str(model), str(inputs_file), str(outputs_file),
                "--latency-batches", ",".join(str(b) for b in latency_batches), "--repeats", str(repeats)]
        if threads:
            args += ["--threads", str(threads)]
        line = run_script(runner, [*args, *extra_args], model, standalone=standalone, should_stop=should_stop,
                          timeout=timeout)
        return None if line is None else (np.load(outputs_file), line)


def run_script(runner: Path, args: list[str], model: Path, *, standalone: bool,
               should_stop: Callable[[], bool] = lambda: False, timeout: float = RUNNER_TIMEOUT_S,
               with_qtradeoff: bool = False) -> dict | None:
    """Run the script ``runner`` with ``args`` in a fresh process and return the last JSON line it printed (None
    when stopped). ``standalone`` runs it with qtradeoff made unimportable; otherwise (or ``with_qtradeoff``) this
    checkout is on its path. ``model`` names the file in error messages. Raises ExportError when it fails."""
    from qtradeoff.core.export import ExportError

    command = [sys.executable, *(["-c", _STANDALONE] if standalone else []), str(runner), *args]
    env = dict(os.environ)
    if not standalone or with_qtradeoff:  # the runner imports qtradeoff's loader: from this very checkout
        root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        started = time.monotonic()
        while process.poll() is None:
            if should_stop() or time.monotonic() - started > timeout:
                process.kill()
                process.wait()
                if should_stop():
                    return None
                raise ExportError(f"verifying {model} took over {timeout:.0f} s in {runner.name}; "
                                  "rerun with --no-verify or a smaller evaluation set")
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode != 0:
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no message")
        raise ExportError(f"{model} did not run in a fresh process ({runner.name} exited with "
                          f"{process.returncode}: {last.strip()[:300]})")
    lines = [line for line in stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        raise ExportError(f"{runner.name} printed no JSON line for {model}")
    return json.loads(lines[-1])


def _check(checks: dict, failures: list, name: str, value, bound, ok: bool, message: str) -> None:
    checks[name] = {"value": value, "bound": bound, "ok": bool(ok)}
    if not ok:
        failures.append(message)


def verify_export(source, fmt, out: Path, *, note: str = "", run: bool = True, threads: int | None = None,
                  latency_batches: tuple[int, ...] = (1, 32), repeats: int = 20, eval_size: int | None = None,
                  should_stop: Callable[[], bool] = lambda: False) -> ExportReport | None:
    """Check the file ``fmt`` wrote at ``out`` for ``source`` (see the module docstring); None when stopped."""
    result = source.engine.evaluate(source.config, latency="none", eval_size=eval_size, should_stop=should_stop)
    ran = None
    if run:
        inputs = source.engine.data.eval_inputs[:result.eval_samples]
        ran = run_runner(fmt.runner, out, inputs.numpy(), standalone=fmt.standalone, threads=threads,
                         latency_batches=latency_batches, repeats=repeats, should_stop=should_stop,
                         extra_args=fmt.runner_args)
        if ran is None:
            return None
    return build_report(source, fmt, out, result, ran, note=note)


# Modules each runner must do without, by format check (what proves the file needs only its runtime): ONNX Runtime
# runs without torch too. Jobs of one process run from the most blocked to the least (runners/run_all.py).
def _blocked(fmt) -> list[str]:
    if not fmt.standalone:
        return []
    return ["qtradeoff", "torch"] if fmt.runner.name == "run_onnxruntime.py" else ["qtradeoff"]


def verify_many(items, *, threads: int | None = None, latency_batches: tuple[int, ...] = (1, 32),
                repeats: int = 20, eval_size: int | None = None, should_stop: Callable[[], bool] = lambda: False,
                timeout: float = RUNNER_TIMEOUT_S) -> list[ExportReport] | None:
    """:func:`verify_export` of several written files in ONE fresh process (``runners/run_all.py``): each file is
    reloaded by its format's runner with the same modules made unimportable as in its own process (ONNX Runtime
    files without torch or qtradeoff, torch-int8 without qtradeoff), so the checks are the same, and the
    interpreter and torch start once. ``items``: ``(source, fmt, out, note)`` tuples; reports in their order
    (None when stopped). Raises ExportError naming the first file whose runner failed."""
    from qtradeoff.core.export import ExportError

    items = list(items)
    results = [source.engine.evaluate(source.config, latency="none", eval_size=eval_size, should_stop=should_stop)
               for source, *_ in items]
    order = sorted(range(len(items)), key=lambda i: -len(_blocked(items[i][1])))
    with tempfile.TemporaryDirectory(prefix="qtradeoff-verify-") as folder:
        folder = Path(folder)
        inputs_files: dict[tuple[int, int], Path] = {}
        jobs = []
        for i in order:
            source, fmt, out, _ = items[i]
            key = (id(source.engine), results[i].eval_samples)
            if key not in inputs_files:  # one inputs file per engine and sample count
                inputs_files[key] = folder / f"inputs{len(inputs_files)}.npy"
                inputs = source.engine.data.eval_inputs[:results[i].eval_samples].numpy()
                np.save(inputs_files[key], runner_inputs(inputs))
            argv = [str(out), str(inputs_files[key]), str(folder / f"outputs{i}.npy"),
                    "--latency-batches", ",".join(str(b) for b in latency_batches), "--repeats", str(repeats)]
            argv += ["--threads", str(threads)] if threads else []
            jobs.append({"runner": str(fmt.runner), "argv": argv + list(fmt.runner_args), "blocked": _blocked(fmt)})
        jobs_file = folder / "jobs.json"
        jobs_file.write_text(json.dumps(jobs))
        # each job blocks its own modules (run_all.py), so the process itself is not standalone
        ran = run_script(RUN_ALL, [str(jobs_file)], jobs_file.parent, standalone=False, should_stop=should_stop,
                         timeout=timeout)
        if ran is None:
            return None
        lines = ran["jobs"]
        reports: list = [None] * len(items)
        for line, i in zip(lines, order, strict=True):
            source, fmt, out, note = items[i]
            if "error" in line:
                raise ExportError(f"{out} did not run in a fresh process ({fmt.runner.name}: {line['error']})")
            outputs = np.load(folder / f"outputs{i}.npy")
            reports[i] = build_report(source, fmt, out, results[i], (outputs, line), note=note)
    return reports


def build_report(source, fmt, out: Path, result, ran: tuple[np.ndarray, dict] | None, *,
                 note: str = "") -> ExportReport:
    """The ExportReport of the file at ``out``: ``result`` is the simulated evaluation of ``source.config`` (the
    samples the file ran on), ``ran`` the runner's ``(outputs, JSON line)`` (None: not run, size checked only)."""
    from qtradeoff.core.measurement.result import mcnemar_exact_p, sqnr_db, wilson_interval

    engine, config = source.engine, source.config
    samples = result.eval_samples
    simulated = {"accuracy": result.accuracy, "accuracy_ci95": result.accuracy_ci95, "agreement": result.agreement,
                 "agreement_ci95": result.agreement_ci95, "sqnr_db": result.sqnr_db}
    file_bytes = out.stat().st_size
    checks: dict = {}
    failures: list[str] = []
    if fmt.max_bytes is not None:
        bound = fmt.max_bytes(result.weight_bytes)
        _check(checks, failures, "file_bytes", file_bytes, bound, file_bytes <= bound,
               f"the file is {file_bytes} bytes, above the {bound} allowed for {result.weight_bytes} counted bytes")
    exported: dict = {}
    runtime: dict = {}
    simulated_as_run: dict = {}
    if ran is not None:
        outputs, runtime = ran
        output = torch.from_numpy(outputs).float()
        sim = engine.logits(config)[:samples].float()
        reference = engine.reference_logits(samples)
        predicted = output.argmax(1)
        agree_sim = int((predicted == sim.argmax(1)).sum())
        agree_fp32 = int((predicted == reference.argmax(1)).sum())
        max_diff = float((output - sim).abs().max()) if output.shape == sim.shape else math.inf
        exported = {"agreement": agree_fp32 / samples, "agreement_ci95": wilson_interval(agree_fp32, samples),
                    "sqnr_db": sqnr_db(reference, output), "agreement_with_simulated": agree_sim / samples,
                    "sqnr_vs_simulated_db": sqnr_db(sim, output) if output.shape == sim.shape else -math.inf,
                    "max_abs_diff_vs_simulated": max_diff, "accuracy": None, "accuracy_ci95": None}
        labels = engine.data.eval_labels
        if labels is not None:
            right = predicted == labels[:samples]
            correct = int(right.sum())
            exported["accuracy"], exported["accuracy_ci95"] = correct / samples, wilson_interval(correct, samples)
            if output.shape == sim.shape:
                # paired, on the same samples: is the file's accuracy really different from the simulation's, or
                # are a few samples on a knife edge flipping both ways (the int8 graph's rounding differs from any
                # float simulation's, so some flips are expected)? The exact McNemar test says which.
                sim_right = sim.argmax(1) == labels[:samples]
                gained, lost = int((right & ~sim_right).sum()), int((~right & sim_right).sum())
                exported["paired_vs_simulated"] = {"file_only_right": gained, "simulated_only_right": lost,
                                                   "mcnemar_p": mcnemar_exact_p(gained, lost)}
        if output.shape != sim.shape:
            failures.append(f"the file's outputs have shape {tuple(output.shape)}, the simulated model's "
                            f"{tuple(sim.shape)}")
        elif fmt.check == "int8":
            # for information beside the checks: the simulation of the configuration the kernels compute where
            # that differs (7-bit activations without VNNI). The checks stay against the configured simulation:
            # on the MobileNets the 7-bit simulation predicted the file no better (0.84 points off where the
            # configured one was 0.28-0.56), the rest being the int8 graph's own quantized layer outputs
            executed = fmt.as_run(source.plan) if fmt.as_run else None
            if executed is not None:
                as_run = engine.evaluate(executed, latency="none", eval_size=samples)
                as_run_sim = engine.logits(executed, store=False)[:samples].float()
                simulated_as_run = {
                    "accuracy": as_run.accuracy, "accuracy_ci95": as_run.accuracy_ci95, "agreement": as_run.agreement,
                    "agreement_ci95": as_run.agreement_ci95, "sqnr_db": as_run.sqnr_db, "config": executed.to_dict(),
                    "why": AS_RUN_WHY}
                exported["agreement_with_simulated_as_run"] = int((predicted == as_run_sim.argmax(1)).sum()) / samples
                exported["sqnr_vs_simulated_as_run_db"] = sqnr_db(as_run_sim, output)
            if labels is not None:
                points = abs(exported["accuracy"] - result.accuracy) * 100
                _check(checks, failures, "accuracy_points_vs_simulated", points, ACCURACY_BOUND_POINTS,
                       points <= ACCURACY_BOUND_POINTS,
                       f"accuracy {100 * exported['accuracy']:.2f}% is {points:.2f} points from the simulated "
                       f"{100 * result.accuracy:.2f}% (bound {ACCURACY_BOUND_POINTS}{_paired_text(exported)})")
            sqnr = exported["sqnr_vs_simulated_db"]
            _check(checks, failures, "sqnr_vs_simulated_db", sqnr, INT8_SQNR_BOUND_DB, sqnr >= INT8_SQNR_BOUND_DB,
                   f"outputs are {sqnr:.1f} dB from the simulated model's (bound {INT8_SQNR_BOUND_DB} dB)")
        else:
            tolerance = EXACT_RELATIVE_TOLERANCE * max(float(sim.abs().max()), 1e-6)
            _check(checks, failures, "max_abs_diff_vs_simulated", max_diff, tolerance, max_diff <= tolerance,
                   f"outputs differ from the simulated model's by up to {max_diff:.3g} (bound {tolerance:.3g})")
    return ExportReport(
        format=fmt.name, file=str(out), file_bytes=file_bytes, weight_bytes=result.weight_bytes,
        fp32_file_bytes=int(getattr(source.loaded, "file_bytes", 0) or 0), eval_samples=samples,
        labelled=result.labelled, simulated=simulated, exported=exported, runtime=runtime, checks=checks,
        failures=tuple(failures), verified=ran is not None, note=note, config=config.to_dict(),
        simulated_as_run=simulated_as_run)


def _paired_text(exported: dict) -> str:
    paired = exported.get("paired_vs_simulated")
    if not paired:
        return ""
    return (f"; {paired['file_only_right']} samples right only in the file, {paired['simulated_only_right']} only "
            f"in the simulation, exact McNemar p = {paired['mcnemar_p']:.2f}")


def _percent(value, ci=None) -> str:
    if value is None:
        return "n/a"
    text = f"{100 * value:.2f}%"
    return text + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")


def _db(value) -> str:
    if value is None or (isinstance(value, float) and math.isinf(value) and value > 0):
        return "identical"
    return f"{value:.1f} dB"


def format_report(report) -> str:
    """The verification as a short table: simulated beside exported, size beside counted bytes, latency."""
    sim, exp = report.simulated, report.exported
    lines = [f"format             {report.format} -> {report.file}"]
    if report.note:
        lines.append(f"note               {report.note}")
    lines.append(f"file size          {report.file_bytes} B (counted weight_bytes {report.weight_bytes} B; "
                 f"{100 * report.size_ratio:.1f}% of the fp32 file's {report.fp32_file_bytes} B)")
    if report.verified:
        metric = "accuracy (top-1)" if report.labelled else "agreement w/ fp32"
        key = "accuracy" if report.labelled else "agreement"
        lines.append(f"{metric:<19}simulated {_percent(sim[key], sim[key + '_ci95'])}   "
                     f"exported {_percent(exp[key], exp[key + '_ci95'])}   ({report.eval_samples} samples)")
        as_run = report.simulated_as_run
        if as_run:
            lines.append(f"{'simulated as run':<19}{_percent(as_run.get(key), as_run.get(key + '_ci95'))}   "
                         f"(for information: {as_run['why']})")
        lines.append(f"vs simulated       top-1 agreement {_percent(exp['agreement_with_simulated'])}, SQNR "
                     f"{_db(exp['sqnr_vs_simulated_db'])}, max |diff| {exp['max_abs_diff_vs_simulated']:.3g}")
        paired = exp.get("paired_vs_simulated")
        if paired and (paired["file_only_right"] or paired["simulated_only_right"]):
            lines.append(f"{'paired':<19}right only in the file: {paired['file_only_right']}, only in the simulation: "
                         f"{paired['simulated_only_right']} (exact McNemar p = {paired['mcnemar_p']:.2f}"
                         f"{'' if paired['mcnemar_p'] >= 0.05 else ': a real difference'})")
        runtime = report.runtime
        timings = ", ".join(f"batch {b}: {t['median']:.3f} ms (min {t['min']:.3f}, max {t['max']:.3f})"
                            for b, t in runtime.get("latency_ms", {}).items())
        lines.append(f"latency            {runtime.get('runtime')} {runtime.get('version')}, "
                     f"{runtime.get('threads')} threads: {timings or 'not timed'}")
    else:
        lines.append("verification       skipped (--no-verify): only the size was checked")
    lines.append("result             " + ("PASS" if report.passed else "FAIL: " + "; ".join(report.failures)))
    return "\n".join(lines)
