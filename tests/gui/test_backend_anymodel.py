"""The GUI's core adapter on an exported program that fixes its batch size and returns a dict: it opens with
synthetic inputs drawn from the program's example (fidelity on synthetic inputs) and scores the first output."""

from __future__ import annotations

import torch

from qtradeoff.gui.backend import CoreBackend


class _Heads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(8, 16)
        self.logits = torch.nn.Linear(16, 5)
        self.score = torch.nn.Linear(16, 1)

    def forward(self, x):
        features = torch.relu(self.body(x))
        return {"logits": self.logits(features), "score": self.score(features)}


def test_exported_dict_model_with_static_batch_opens_on_synthetic_inputs(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "heads.pt2"
    torch.export.save(torch.export.export(_Heads().eval(), (torch.randn(2, 8),)), str(path))
    backend = CoreBackend()
    summary = backend.load_model(str(path), trust=True)
    assert summary.data_name.startswith("fidelity on synthetic inputs") and not summary.labelled
    assert [layer.name for layer in summary.layers] == ["body", "logits", "score"]
    results = list(backend.evaluate_iter(backend.baseline_config(), eval_size=0, latency="none",
                                         should_stop=lambda: False))
    result = results[-1]
    assert backend.is_result(result) and result.accuracy is None and result.provenance["data"]["synthetic"]
    assert result.provenance["output"]["scored"] == "logits"
    assert result.provenance["output"]["others"] == [{"name": "score", "shape": [1, 1], "dtype": "float32"}]
    assert any("fidelity on synthetic inputs" in warning for warning in result.provenance["warnings"])
