"""Data kinds beyond tensor files: audio folders, streamed splits (never materialized whole), the dataset hook behind
the trust gate, and the options the CLI and the GUI's data dialog share."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from torch import nn

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine, EngineSpec
from qtradeoff.core.loading import datasets, streaming, tabular
from qtradeoff.core.loading.data import DataLoadError
from qtradeoff.core.loading.model_io import LoadedModel, NeedsTrust
from qtradeoff.core.loading.plausibility import baseline_warning


def _wav(path, rate, audio):
    from scipy.io import wavfile

    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(str(path), rate, audio)


def test_audio_folder_reads_pcm16_and_float_wavs_resampled_and_cut(tmp_path):
    t = np.arange(4000) / 8000.0
    for label, freq in enumerate((200.0, 900.0)):
        for i in range(6):
            tone = np.sin(2 * np.pi * freq * t * (1 + i / 50))
            if i % 2:
                _wav(tmp_path / f"c{label}" / f"{i}.wav", 8000, (tone * 20000).astype(np.int16))
            else:  # float wav at another rate, stereo, shorter than the length: resampled, mixed, padded
                stereo = np.stack([tone[:2000], tone[:2000]], axis=1).astype(np.float32) * 0.5
                _wav(tmp_path / f"c{label}" / f"{i}.wav", 4000, stereo)
    data = datasets.load(tmp_path, {"kind": "auto", "sample_rate": 8000, "audio_samples": 3000, "calib_size": 4})
    assert data.input_shape == (1, 3000) and data.num_classes == 2 and len(data.eval_inputs) == 8
    assert isinstance(data.eval_inputs, torch.Tensor) and data.eval_inputs.abs().max() <= 1.0
    assert data.eval_inputs.abs().amax(dim=-1).min() > 0.3  # every file was read, not zeros


def test_options_round_trip_and_refuse_wrong_kind(tmp_path):
    options = datasets.DataOptions(kind="image_folder", image_size=16, channels=1, mean=(0.5,), std=(0.25,))
    assert datasets.DataOptions.from_dict(options.to_dict()) == options
    with pytest.raises(DataLoadError, match="unknown data option"):
        datasets.DataOptions.from_dict({"colour": 1})
    table = tmp_path / "t.csv"
    table.write_text("a,label\n1,0\n")
    with pytest.raises(DataLoadError, match="not image folder"):
        datasets.load(table, {"kind": "image_folder"})


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _loaded(module):
    return LoadedModel(module=module.eval(), path="tiny", name="tiny", format="module", sha256="0", trusted=True,
                       file_bytes=0, input_shape=(8,), num_classes=3, architecture=None, load_seconds=0.0)


def test_a_streamed_npy_larger_than_the_bound_is_never_materialized(tmp_path):
    torch.manual_seed(0)
    module = _Tiny()
    array = np.random.default_rng(0).normal(size=(1300, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    data = datasets.load(tmp_path / "x.npy", {"stream": True, "calib_size": 100, "eval_size": 1100})
    assert streaming.is_streamed(data.eval_inputs) and len(data.eval_inputs) == 1100
    alive = {"now": 0, "max": 0}

    def freed(count):
        alive["now"] -= count

    def on_read(batch):  # counts the samples of every batch read until the batch is freed
        alive["now"] += len(batch)
        alive["max"] = max(alive["max"], alive["now"])
        weakref.finalize(batch, freed, len(batch))

    data.eval_inputs.on_read = data.calib_inputs.on_read = on_read
    engine = Engine(_loaded(module), data, cache_bytes=0)
    w8a8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
    fp32 = engine.evaluate(CompressionConfig(), latency="none")
    quantized = engine.evaluate(w8a8, latency="none")
    bound = 2 * streaming.MATERIALIZE_LIMIT
    assert 0 < alive["max"] <= bound < 1100
    with torch.no_grad():  # the same numbers as the whole array in memory
        expected = module(torch.from_numpy(array[data.eval_inputs.indices])).argmax(1)
    assert fp32.agreement == 1.0 and quantized.agreement > 0.9
    assert torch.equal(engine.reference_logits().argmax(1), expected)


def test_a_streamed_csv_reads_as_the_whole_table_does(tmp_path):
    rows = np.random.default_rng(1).normal(size=(500, 3))
    table = tmp_path / "t.csv"
    table.write_text("a,b,c,label\n" + "".join(f"{r[0]},{r[1]},{r[2]},{int(r[0] > 0)}\n" for r in rows))
    inputs, labels, _ = tabular.read_csv(table, 1 << 30)  # the whole table in memory, as small CSVs are read
    streamed = datasets.load(table, {"calib_size": 50, "eval_size": 400, "stream": True})
    assert streaming.is_streamed(streamed.eval_inputs)
    chosen = streamed.eval_inputs.indices
    assert torch.allclose(streamed.eval_inputs[:200], inputs[chosen[:200]])
    assert torch.equal(streamed.eval_labels, labels[chosen])


HOOK = """
import torch

class Blobs(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.y = torch.randint(0, 3, (400,), generator=g)
        self.x = torch.randn(400, 8, generator=g) * 0.1 + self.y[:, None].float()
    def __len__(self):
        return len(self.y)
    def __getitem__(self, i):
        return self.x[i], int(self.y[i])

def stream():
    data = Blobs()
    for i in range(len(data)):
        yield data[i]
"""


def test_the_dataset_hook_is_behind_the_trust_gate(tmp_path, monkeypatch):
    (tmp_path / "my_hook_data.py").write_text(HOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert datasets.is_hook("my_hook_data:Blobs") and not datasets.is_hook(str(tmp_path))
    with pytest.raises(NeedsTrust) as refused:
        datasets.load("my_hook_data:Blobs")
    assert refused.value.format == datasets.HOOK_FORMAT and "--trust" in str(refused.value)
    mapped = datasets.load("my_hook_data:Blobs", {"calib_size": 40, "eval_size": 200}, trust=True)
    assert mapped.input_shape == (8,) and mapped.num_classes == 3 and len(mapped.eval_labels) == 200
    iterated = datasets.load("my_hook_data:stream", {"calib_size": 40, "eval_size": 200}, trust=True)
    assert iterated.input_shape == (8,) and len(iterated.eval_inputs) == 200
    with pytest.raises(NeedsTrust):  # the CLI's --data takes it through the same gate
        EngineSpec("digits_mlp", "my_hook_data:Blobs").load()


def test_baseline_warning_near_chance_only():
    assert baseline_warning(0.12, 10, "folder") is not None and "preprocessing" in baseline_warning(0.12, 10)
    assert baseline_warning(0.26, 10) is not None
    assert baseline_warning(0.9, 10) is None and baseline_warning(0.1, None) is None
    assert baseline_warning(0.45, 2) is not None and baseline_warning(0.7, 2) is None


def test_image_options_apply_to_the_digits_too():
    """``--data digits --image-size 32 --channels 3`` feeds an RGB model (the options were silently ignored)."""
    assert tuple(datasets.load("digits", {"eval_size": 4}).eval_inputs.shape[1:]) == (1, 32, 32)
    rgb = datasets.load("digits", {"image_size": 16, "channels": 3, "mean": [0.5], "eval_size": 4})
    assert tuple(rgb.eval_inputs.shape) == (4, 3, 16, 16)
    assert torch.equal(rgb.eval_inputs[:, 0], rgb.eval_inputs[:, 2])  # grey, repeated
    with pytest.raises(DataLoadError, match="one value"):
        datasets.load("digits", {"mean": [0.485, 0.456, 0.406]})
