"""The precision registry: complete, self-consistent, and what the configuration parses."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch

from qtradeoff.core import config, precision
from qtradeoff.core.precision import DISPLAY_ORDER, PRECISIONS, REGISTRY, ConfigError


def test_the_registry_holds_every_precision_of_the_design():
    assert PRECISIONS == (("fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2") + tuple(f"int{b}" for b in range(2, 17))
                          + tuple(f"lut{b}" for b in range(2, 9)))
    assert tuple(REGISTRY) == PRECISIONS and all(REGISTRY[name].name == name for name in PRECISIONS)
    assert config.PRECISIONS is PRECISIONS and config.bits_of is precision.bits_of
    assert config.is_integer is precision.is_integer and config.ConfigError is ConfigError


@pytest.mark.parametrize("name", PRECISIONS)
def test_every_precision_parses_and_its_facts_agree(name):
    p = precision.get(name)
    activation = {"precision": name} if not p.is_lut else {}
    parsed = config.CompressionConfig().with_defaults(weight={"precision": name}, activation=activation)
    assert parsed.resolve("any").weight.precision == name
    assert p.kind in ("float", "int", "lut") and p.is_integer == (p.kind == "int") == precision.is_integer(name)
    assert p.is_lut == (p.kind == "lut") == precision.is_lut(name)
    assert precision.bits_of(name) == p.bits and precision.label(name) == p.label and p.label
    assert p.family in precision.FLOAT_FAMILIES + ("int8",)
    if p.is_lut:
        assert p.dtype is None and p.family == "fp32" and name == f"lut{p.bits}" and 2 <= p.bits <= 8
        with pytest.raises(ValueError, match="no torch dtype"):
            precision.torch_dtype(name)
        with pytest.raises(ConfigError, match="weights only"):
            config.CompressionConfig().with_defaults(activation={"precision": name})
    elif p.is_integer:
        assert p.dtype is None and precision.integer(p.bits) == name and name == f"int{p.bits}"
        assert p.family == ("int8" if p.bits <= 8 else "fp32")
        with pytest.raises(ValueError, match="no torch dtype"):
            precision.torch_dtype(name)
    else:
        dtype = precision.torch_dtype(name)
        assert isinstance(dtype, torch.dtype) and dtype.is_floating_point
        assert torch.finfo(dtype).bits == p.bits  # the storage dtype really has the counted width
        assert precision.torch_dtype(p.family) in (torch.float32, dtype)


def test_kernel_families_are_the_floats_with_a_cpu_kernel_plus_int8():
    assert precision.FLOAT_FAMILIES == ("fp32", "fp16", "bf16")
    assert {precision.family(name) for name in PRECISIONS} == {"fp32", "fp16", "bf16", "int8"}
    assert precision.family("fp8_e4m3") == "fp32" and precision.family("int4") == "int8"


def test_display_order_is_widest_first_and_a_permutation():
    assert sorted(DISPLAY_ORDER) == sorted(PRECISIONS)
    assert DISPLAY_ORDER[:5] == ("fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2")
    assert DISPLAY_ORDER[5:20] == tuple(f"int{b}" for b in range(16, 1, -1))
    assert DISPLAY_ORDER[20:] == tuple(f"lut{b}" for b in range(8, 1, -1))
    assert [REGISTRY[name].order for name in DISPLAY_ORDER] == list(range(len(PRECISIONS)))
    bits = [REGISTRY[name].bits for name in DISPLAY_ORDER]
    assert bits[5:20] == sorted(bits[5:20], reverse=True) and bits[20:] == sorted(bits[20:], reverse=True)


@pytest.mark.parametrize("bad", ["int1", "int17", "fp64", "INT8", "", None, 8])
def test_unknown_names_are_config_errors(bad):
    with pytest.raises(ConfigError, match=r"is not a precision \(int2\.\.int16, fp32"):
        precision.get(bad)
    assert not precision.is_integer(bad)
    with pytest.raises(ConfigError, match=r"^\$\.x: "):
        precision.get(bad, "$.x")


@pytest.mark.parametrize("bits", [1, 17, 8.0, True, "8"])
def test_integer_rejects_widths_outside_the_grid(bits):
    with pytest.raises(ConfigError, match="int2..int16"):
        precision.integer(bits)


def test_records_are_frozen_and_errors_pickle():
    with pytest.raises(AttributeError):
        REGISTRY["int8"].bits = 4
    with pytest.raises(TypeError):
        REGISTRY["int8"] = REGISTRY["int4"]  # type: ignore[index]
    error = pickle.loads(pickle.dumps(ConfigError("$.a", "broken")))
    assert (error.path, error.problem, str(error)) == ("$.a", "broken", "$.a: broken")


def test_importing_the_registry_and_the_configuration_does_not_import_torch():
    code = ("import sys; import qtradeoff.core.config, qtradeoff.core.precision; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
