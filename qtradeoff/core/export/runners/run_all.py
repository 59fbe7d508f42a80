"""Reload several exported files in one fresh process, each with the runner of its format and only the modules that
runner is allowed: one interpreter start and one ``import torch`` for a whole set of exports instead of one per file.

    python run_all.py JOBS.json

JOBS.json is a list of ``{"runner": "/path/run_torch.py", "argv": [MODEL, INPUTS.npy, OUTPUTS.npy, ...],
"blocked": ["qtradeoff", ...]}``. Jobs run in the order given; before each, every module named in ``blocked`` is
made unimportable, and a job whose blocked module an earlier job already imported is refused (it could not prove
the file runs without it), so callers order the jobs from the most blocked to the least (ONNX Runtime with torch
and qtradeoff blocked, then torch with qtradeoff blocked, then qtradeoff's own loader). Prints one JSON line:
``{"jobs": [<the runner's JSON line> | {"error": "..."}, ...]}``. Imports only the standard library itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import traceback


def _blocked_already(blocked: list[str]) -> list[str]:
    return [name for name in blocked if sys.modules.get(name) is not None]


def run_job(index: int, job: dict) -> dict:
    early = _blocked_already(job.get("blocked", []))
    if early:
        return {"error": f"{', '.join(early)} already imported by an earlier job; order the jobs from the most "
                         "blocked to the least"}
    for name in job.get("blocked", []):
        sys.modules[name] = None  # import raises ImportError
    try:
        spec = importlib.util.spec_from_file_location(f"_qtradeoff_runner_{index}", job["runner"])
        module = importlib.util.module_from_spec(spec)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            spec.loader.exec_module(module)
            code = module.main(list(job["argv"]))
        if code:
            return {"error": f"{job['runner']} exited with {code}"}
        lines = [line for line in printed.getvalue().splitlines() if line.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else {"error": f"{job['runner']} printed no JSON line"}
    except BaseException as error:  # noqa: BLE001 - one failing file must not hide the others' results
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        return {"error": " ".join(last.split())[:300]}
    finally:
        for name in job.get("blocked", []):
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: run_all.py JOBS.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        jobs = json.load(handle)
    results = [run_job(index, job) for index, job in enumerate(jobs)]
    print(json.dumps({"jobs": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
