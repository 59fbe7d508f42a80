"""Input specifications: --input syntax, seeded synthetic inputs, what a file states about its input."""

from __future__ import annotations

import pytest
import torch

from qtradeoff.core.loading import input_spec
from qtradeoff.core.loading.input_spec import InputSpecError, parse, synthetic


def test_parse_token_ids_and_floats():
    tokens = parse("tokens:int64[1,32]<30000")
    assert (tokens.name, tokens.dtype, tokens.shape, tokens.low, tokens.high) == ("tokens", torch.int64, (1, 32),
                                                                                  0.0, 30000.0)
    assert tokens.sample_shape == (32,) and tokens.is_integer and parse(tokens.text()) == tokens
    image = parse("x:float32[1,3,64,64]")
    assert image.dtype == torch.float32 and image.high is None and image.sample_shape == (3, 64, 64)
    ranged = parse(" float32[4, 8] -1..1 ")
    assert ranged.name == "input" and (ranged.low, ranged.high) == (-1.0, 1.0) and ranged.batch == 4


@pytest.mark.parametrize(("text", "needle"), [
    ("tokens:int64(1,32)", "not an input specification"),
    ("tokens[1,32]", "unknown dtype 'tokens'"),
    ("tokens:int65[1,32]<10", "unknown dtype"),
    ("tokens:int64[1,32]", "exclusive upper bound"),
    ("x:float32[0,3]", "positive integers"),
    ("x:float32[1,3]2..1", "range is empty"),
    ("x:float32[1,100000,100000,100000]", "values per sample"),
])
def test_bad_specifications_say_what_to_write(text, needle):
    with pytest.raises(InputSpecError) as caught:
        parse(text)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_synthetic_inputs_are_seeded_and_in_range():
    tokens = parse("t:int64[1,16]<50")
    first, again, other = synthetic(tokens, 20, seed=3), synthetic(tokens, 20, seed=3), synthetic(tokens, 20, seed=4)
    assert first.dtype == torch.int64 and first.shape == (20, 16) and torch.equal(first, again)
    assert not torch.equal(first, other) and int(first.min()) >= 0 and int(first.max()) < 50
    ranged = synthetic(parse("x:float32[1,5]-2..2"), 100)
    assert float(ranged.min()) >= -2 and float(ranged.max()) < 2
    data = input_spec.synthetic_data(tokens, calib_size=8, eval_size=12)
    assert data.synthetic and not data.labelled and len(data.eval_inputs) == 12
    assert data.input_spec["text"] == "t:int64[1,16]<50" and data.eval_inputs.dtype == torch.int64


def test_specs_read_from_exported_programs_and_traced_torchscript():
    module = torch.nn.Sequential(torch.nn.Linear(6, 2)).eval()
    example = torch.randn(3, 6)
    exported = torch.export.export(module, (example,)).module()
    found = input_spec.from_module(exported)
    assert found.shape == (3, 6) and found.dtype == torch.float32 and found.static_batch and found.source == "export"
    batch = torch.export.Dim("batch", min=1, max=64)
    dynamic = torch.export.export(module, (example,), dynamic_shapes=({0: batch},)).module()
    assert not input_spec.from_module(dynamic).static_batch
    traced = torch.jit.trace(module, example)
    found = input_spec.from_module(traced)
    assert found is None or (found.sample_shape == (6,) and found.source == "torchscript")
    assert input_spec.from_module(module) is None
