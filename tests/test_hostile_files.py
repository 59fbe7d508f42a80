"""Issue 20: files rated "safe" must stay bounded. Each hostile file (see ``hostile_files``) goes through the real
command line in one subprocess, which reports per case the exit code, stderr, its own peak resident memory
(VmHWM, reset between cases through /proc/self/clear_refs) and the loader child's (ru_maxrss from the loader's
wait4). A refusal is one line naming the file; parent + child peak stays under 600 MB (the child's figure
includes the pages it shares with the loader server it was forked from, so the sum bounds the whole tree).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hostile_files as hostile
import pytest

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[1]
PEAK_LIMIT_MB = 600

_RUNNER = r"""
import contextlib, io, json, os, sys
from qtradeoff import cli
from qtradeoff.core.loading import _load_child

def hwm_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

for argv in json.loads(sys.argv[1]):
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM: each case's own peak
    _load_child.SERVER.last_peak_rss = None
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(argv)
        except BaseException as error:  # a crash is a result too
            code = f"raised {type(error).__name__}: {error}"
    child = (_load_child.SERVER.last_peak_rss or 0) / (1 << 20)
    print(json.dumps({"argv": argv, "code": code, "err": err.getvalue(), "parent_mb": hwm_mb(),
                      "child_mb": child}), flush=True)
"""


def _cases(tmp: Path) -> dict[str, tuple[list[str], int, str, str]]:
    """name -> (argv, expected exit code, text the one stderr line must hold, the file it must name)."""
    import torch

    data = tmp / "data.pt"
    torch.save({"inputs": torch.randn(40, 64), "labels": torch.arange(40) % 10}, data)
    evaluate = ["--latency", "none", "--eval-size", "8", "--calib-size", "8"]
    linear, partial = hostile.linear_called_with_args(tmp), hostile.partial_forward(tmp)
    vit, head, lying = hostile.vit_h_metadata(tmp), hostile.stride0_head(tmp), hostile.lying_zip_member(tmp)
    newobj, strided, protocol4 = hostile.linear_newobj_with_args(tmp), hostile.stride0_data(tmp), hostile.protocol4(tmp)
    odd_name, sized = hostile.non_utf8_name(tmp), hostile.bytearray_of_a_gigabyte(tmp)
    return {
        "bytearray(10**9) through weights_only's defaults": (["inspect", str(sized)], 4,
                                                              "builtins.bytearray called with a size", sized),
        "REDUCE Linear(30000, 30000), inspect": (["inspect", str(linear)], 4, "Linear called with arguments", linear),
        "REDUCE Linear(30000, 30000), evaluate": (["evaluate", str(linear), "--data", str(data), *evaluate], 4,
                                                  "Linear called with arguments", linear),
        "NEWOBJ Linear(30000, 30000)": (["inspect", str(newobj)], 4, "Linear called with arguments", newobj),
        "forward = partial(Linear, 20000, 20000)": (["evaluate", str(partial), "--data", str(data), *evaluate], 4,
                                                    "functools.partial", partial),
        "131-byte safetensors naming ViT-H/14": (["inspect", str(vit)], 3,
                                                 "does not fit the architecture torchvision.vit_h_14", vit),
        "stride-0 10^6-class head": (["inspect", str(head)], 3, "broadcast views", head),
        "stride-0 data (1300, 1, 500, 500)": (["evaluate", "digits_mlp", "--data", str(strided), *evaluate], 3,
                                              "broadcast views", strided),
        "zip member inflating past its directory size": (["inspect", str(lying)], 3,
                                                         "inflates to more than the 576 bytes", lying),
        "protocol-4 state dict": (["inspect", str(protocol4)], 4, "pickle protocol 4", protocol4),
        "/dev/zero as the configuration": (["evaluate", "digits_mlp", "--config", "/dev/zero", *evaluate], 3,
                                           "not a regular file", "/dev/zero"),
        "valid safetensors with a non-UTF-8 name": (["inspect", str(odd_name)], 0, "", odd_name),
    }


CASES = ("bytearray(10**9) through weights_only's defaults",
         "REDUCE Linear(30000, 30000), inspect", "REDUCE Linear(30000, 30000), evaluate",
         "NEWOBJ Linear(30000, 30000)", "forward = partial(Linear, 20000, 20000)",
         "131-byte safetensors naming ViT-H/14", "stride-0 10^6-class head", "stride-0 data (1300, 1, 500, 500)",
         "zip member inflating past its directory size", "protocol-4 state dict", "/dev/zero as the configuration",
         "valid safetensors with a non-UTF-8 name")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    cases = _cases(tmp)
    assert set(cases) == set(CASES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps([case[0] for case in cases.values()])],
                         capture_output=True, text=True, errors="surrogateescape", env=env, timeout=220)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(cases), run.stderr[-2000:]
    return {name: (expected, line) for (name, expected), line in zip(cases.items(), lines, strict=True)}


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_file_is_refused_in_one_line_within_the_memory_bound(case, outcomes):
    (_argv, code, expect, named), line = outcomes[case]
    assert line["code"] == code, line
    err = line["err"]
    if code:
        assert err.count("\n") == 1 and "Traceback" not in err and "MemoryError" not in err, err
        assert expect in err and str(named) in err, err
    else:
        assert not err, err
    print(f"\n[{case}] exit {line['code']}, peak {line['parent_mb']:.0f} MB here + {line['child_mb']:.0f} MB in "
          "the loader child")
    assert line["parent_mb"] + line["child_mb"] < PEAK_LIMIT_MB, line
