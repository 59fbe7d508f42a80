"""User architecture code that imports torchvision builds (issue 16): the compat shim is installed before any
code the user trusted is imported. Run in a fresh process, where nothing has imported torchvision yet."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from safetensors.torch import save_file
from torch import nn

USER_MODULE = textwrap.dedent('''
    import torchvision  # what fails beside CPU torch unless the op schemas are declared first
    from torch import nn


    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(1024, 32), nn.ReLU(), nn.Linear(32, num_classes))

        def forward(self, x):
            return self.body(x)
''')


def test_user_architecture_importing_torchvision_evaluates(tmp_path):
    (tmp_path / "user_tv_net.py").write_text(USER_MODULE)
    body = nn.Sequential(nn.Flatten(), nn.Linear(1024, 32), nn.ReLU(), nn.Linear(32, 10))
    save_file({f"body.{k}": v.contiguous() for k, v in body.state_dict().items()}, tmp_path / "net.safetensors")
    code = ("import sys; from qtradeoff import cli; sys.exit(cli.main(['evaluate', sys.argv[1], '--data', 'digits', "
            "'--architecture', 'user_tv_net:Net', '--trust', '--latency', 'none', '--eval-size', '50']))")
    completed = subprocess.run([sys.executable, "-c", code, str(tmp_path / "net.safetensors")], capture_output=True,
                               text=True, timeout=300, cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "torchvision::nms" not in completed.stderr
