"""Layer inventory of eager, TorchScript and torch.export models."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from qtradeoff.core.loading import architectures
from qtradeoff.core.loading.data import SAMPLE_DIR
from qtradeoff.core.loading.inventory import InventoryError, compressible_names, inventory

DIGITS_LAYERS = [f"features.{i}.conv" for i in range(6)] + ["classifier.2"]


@pytest.fixture(scope="module")
def digits_cnn():
    model = architectures.build("qtradeoff.digits_cnn", num_classes=10)
    model.load_state_dict(load_file(SAMPLE_DIR / "digits_cnn.safetensors"))
    return model.eval()


def _summary(infos):
    return [(i.name, i.kind, i.macs, i.output_shape, i.compressible) for i in infos]


def test_digits_cnn_layers(digits_cnn):
    infos = inventory(digits_cnn, (1, 32, 32))
    assert compressible_names(infos) == DIGITS_LAYERS
    by_name = {i.name: i for i in infos}
    assert by_name["features.2.conv"].groups == 32 and by_name["features.4.conv"].groups == 4
    assert by_name["features.0.conv"].output_shape == (16, 32, 32)
    assert by_name["classifier.2"].kind == "Linear" and by_name["classifier.2"].weight_shape == (10, 128)
    assert by_name["classifier.2"].params == 10 * 128 + 10
    for info in infos:
        if info.kind == "Conv2d":  # out_elems * in_ch/groups * kh * kw
            assert info.macs == math.prod(info.output_shape) * math.prod(info.weight_shape[1:])
    bn = by_name["features.3.bn"]
    assert not bn.compressible and "BatchNorm2d" in bn.reason and bn.params == 128
    # execution order: each BN right after its conv
    names = [i.name for i in infos]
    assert names.index("features.3.bn") == names.index("features.3.conv") + 1


def test_macs_agree_with_flop_counter(digits_cnn):
    infos = inventory(digits_cnn, (1, 32, 32))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        digits_cnn(torch.zeros(1, 1, 32, 32))
    flops = counter.get_flop_counts()
    for info in infos:
        if info.compressible:
            assert info.macs * 2 == sum(flops[f"DigitsCNN.{info.name}"].values()), info.name


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:DeprecationWarning")
def test_torchscript_and_export_match_eager(digits_cnn):
    eager = _summary(inventory(digits_cnn, (1, 32, 32)))
    scripted = torch.jit.load(SAMPLE_DIR / "digits_cnn.torchscript.pt")
    assert _summary(inventory(scripted, (1, 32, 32))) == eager
    program = torch.export.export(digits_cnn, (torch.zeros(1, 1, 32, 32),))
    assert _summary(inventory(program.module(), (1, 32, 32))) == eager


def test_inventory_does_not_change_the_model(digits_cnn):
    before = {k: v.clone() for k, v in digits_cnn.state_dict().items()}
    inventory(digits_cnn, (1, 32, 32))
    assert not digits_cnn.training
    after = digits_cnn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.lstm = nn.LSTM(8, 6, batch_first=True)
        self.norm = nn.LayerNorm(6)
        self.up = nn.ConvTranspose1d(6, 4, 3, stride=2)
        self.prelu = nn.PReLU()

    def forward(self, tokens):
        x = self.emb(tokens)
        x, _ = self.attn(x, x, x)
        x, _ = self.lstm(x)
        return self.prelu(self.up(self.norm(x).transpose(1, 2)))


def test_other_layer_types():
    infos = {i.name: i for i in inventory(_Mixed().eval(), example_input=torch.randint(0, 20, (1, 5)))}
    assert infos["emb"].compressible and infos["emb"].kind == "Embedding" and infos["emb"].macs == 0
    attn = infos["attn"]
    assert attn.compressible and attn.weight_names == ("in_proj_weight",) and attn.macs == 5 * 8 * 24
    assert infos["attn.out_proj"].kind == "Linear" and infos["attn.out_proj"].macs == 5 * 8 * 8
    lstm = infos["lstm"]
    assert lstm.compressible and set(lstm.weight_names) == {"weight_ih_l0", "weight_hh_l0"}
    assert lstm.macs == 5 * 4 * 6 * (8 + 6) and lstm.output_shape == (5, 6)
    up = infos["up"]
    assert up.kind == "ConvTranspose1d" and up.out_axis == 1 and up.output_shape == (4, 11)
    assert up.macs == 5 * 6 * 4 * 3  # in_elems * out_ch/groups * k
    assert not infos["norm"].compressible and infos["norm"].reason
    assert not infos["prelu"].compressible and "not a supported layer type" in infos["prelu"].reason


def test_failing_forward_is_reported(digits_cnn):
    with pytest.raises(InventoryError, match="input shape"):
        inventory(digits_cnn, (3, 7))


def test_inventory_imports_neither_dynamo_nor_sympy(tmp_path):
    """A process's first inventory used to import torch._dynamo (and sympy through it): seconds of every CLI run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\n"
        "from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for\n"
        "from qtradeoff.core.loading.inventory import inventory\n"
        "loaded = load_sample_model('digits_cnn')\n"
        "layers = inventory(loaded.module, example_input=sample_data_for(loaded).calib_inputs[:1])\n"
        "assert len(layers) == 13, layers\n"
        "print(' '.join(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))\n")
    root = str(Path(__file__).resolve().parents[3])
    child = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=root,
                           env={**os.environ, "PYTHONPATH": root}, check=False)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == [], f"imported by the inventory: {child.stdout.strip()}"
