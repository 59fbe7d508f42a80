"""TorchScript files of registry architectures run on real int8 kernels (issue 16): the loader rebuilds the eager
module when structure, tensors and probe outputs agree, and keeps the scripted one (saying why) otherwise."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from qtradeoff.cli_evaluate import int8_count
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading import architectures
from qtradeoff.core.loading.architectures import ConvBNReLU
from qtradeoff.core.loading.data import EvalData, fingerprint
from qtradeoff.core.loading.model_io import load_model, load_sample_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


def test_a_scripted_resnet18_runs_most_layers_on_int8_kernels(tmp_path):
    torch.manual_seed(0)
    eager = architectures.build("torchvision.resnet18", num_classes=10).eval()
    path = tmp_path / "resnet18_scripted.pt"
    torch.jit.save(torch.jit.script(eager), path)
    loaded = load_model(path, trust=True, isolate=False)  # TorchScript needs consent
    assert loaded.format == "torchscript" and not isinstance(loaded.module, torch.jit.ScriptModule)
    assert loaded.architecture == "torchvision.resnet18" and loaded.num_classes == 10 and loaded.warnings == []
    calib, inputs = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64)
    engine = Engine(loaded, EvalData("random", calib, None, inputs, None, 10, fingerprint(calib, inputs)))
    real = engine.real_model(engine.plan(W8A8))
    int8 = sum(precision == "int8" for precision in real.executed_precisions.values())
    assert len(real.executed_precisions) == 21 and int8 >= 0.8 * 21, real.note
    with torch.no_grad():
        assert torch.allclose(loaded.module(inputs), eager(inputs), atol=1e-5)
    assert f"; {int8} of 21 layers ran on int8 kernels" == int8_count(SimpleNamespace(
        executed_precisions=real.executed_precisions))


class DigitsCNN(nn.Module):  # noqa: D101 - the bundled class's name and layout, another forward
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(ConvBNReLU(1, 16, 3), ConvBNReLU(16, 32, 3, stride=2),
                                      ConvBNReLU(32, 32, 3, groups=32), ConvBNReLU(32, 64, 1),
                                      ConvBNReLU(64, 64, 3, stride=2, groups=4), ConvBNReLU(64, 128, 3, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x))) * 2.0


def test_a_scripted_module_computing_something_else_is_kept_and_says_why(tmp_path):
    impostor = DigitsCNN().eval()
    impostor.load_state_dict(load_sample_model("digits_cnn").module.state_dict())
    path = tmp_path / "impostor.pt"
    torch.jit.save(torch.jit.script(impostor), path)
    loaded = load_model(path, trust=True, isolate=False)
    assert isinstance(loaded.module, torch.jit.ScriptModule)
    (warning,) = loaded.warnings
    assert "qtradeoff.digits_cnn" in warning and "outputs differ" in warning and "int8 kernels" in warning


def test_a_scripted_module_of_no_registry_architecture_loads_as_before(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(5, 3), nn.ReLU())), path)
    loaded = load_model(path, trust=True, isolate=False)
    assert isinstance(loaded.module, torch.jit.ScriptModule) and loaded.warnings == []
