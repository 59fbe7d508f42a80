"""Data formats beyond tensor dicts: .npy (inputs only), CSV tables with a label column, .npz key layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qtradeoff.core.loading.data import DIGITS_FILE, DataLoadError, load_data, load_digits
from qtradeoff.core.loading.model_io import load_sample_model


def _mlp_preprocessing():
    return load_sample_model("digits_mlp").preprocessing


def _one_line(caught, *needles):
    message = str(caught.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


def test_npy_is_inputs_only(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((40, 3, 4), dtype=np.float32))
    data = load_data(path, isolate=False)
    assert data.input_shape == (3, 4) and not data.labelled and len(data.calib_inputs) + len(data.eval_inputs) == 40


def test_npy_refuses_objects_and_oversized_headers(tmp_path):
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(DataLoadError) as caught:
        load_data(objects, isolate=False)
    _one_line(caught, "objects.npy", "Python objects")
    # a header claiming 10^12 float64 values in a file of a few bytes: refused before anything is allocated
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f8", "fortran_order": False,
                                                      "shape": (1_000_000, 1_000_000)})
        handle.write(b"\0" * 64)
    with pytest.raises(DataLoadError) as caught:
        load_data(huge, isolate=False, memory_budget=1 << 30)
    _one_line(caught, "huge.npy", "memory budget")


def test_csv_with_default_and_named_label_columns(tmp_path):
    rows = ["f1,f2,Target"] + [f"{i * 0.5},{-i},{i % 3}" for i in range(30)]
    default = tmp_path / "default.csv"
    default.write_text("\n".join(rows) + "\n")
    data = load_data(default, isolate=False, calib_size=5, eval_size=25)
    assert data.input_shape == (2,) and data.labelled and data.num_classes == 3
    named = tmp_path / "named.csv"
    named.write_text("\n".join(["kind;x;z"] + [f"{'cat' if i % 2 else 'dog'};{i};{i * i}" for i in range(20)]))
    data = load_data(named, isolate=False, label_column="kind", calib_size=4, eval_size=16)
    assert data.input_shape == (2,) and data.num_classes == 2
    unlabelled = tmp_path / "features.csv"
    unlabelled.write_text("a,b\n1,2\n3,4\n5,6\n7,8\n9,10\n")
    assert not load_data(unlabelled, isolate=False).labelled


@pytest.mark.parametrize(("text", "label_column", "needles"), [
    ("a,b,label\n1,2,0\n3,oops,1\n", None, ("row 3", "'b'", "'oops'")),
    ("a,b,label\n1,2,0\n3,,1\n", None, ("row 3", "'b'")),
    ("a,b,label\n1,2,0\n3,4\n", None, ("row 3", "2 cells")),
    ("a,b,label\n1,2,0.5\n3,4,1\n", None, ("row 2", "class index")),
    ("1,2,3\n4,5,6\n", None, ("header row",)),
    ("a,b\n1,2\n", "species", ("no column named 'species'",)),
    ("label\n1\n2\n", None, ("no feature columns",)),
])
def test_csv_errors_are_one_line_naming_row_and_column(tmp_path, text, label_column, needles):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataLoadError) as caught:
        load_data(path, isolate=False, label_column=label_column)
    _one_line(caught, "bad.csv", *needles)


def test_csv_too_large_is_refused_before_parsing(tmp_path, monkeypatch):
    from qtradeoff.core.loading import tabular

    monkeypatch.setattr(tabular, "MAX_CSV_BYTES", 100)
    path = tmp_path / "big.csv"
    path.write_text("a,label\n" + "1,0\n" * 100)
    with pytest.raises(DataLoadError) as caught:
        load_data(path, isolate=False)
    _one_line(caught, "big.csv", ".npy")


def test_csv_is_read_in_the_isolated_child_too(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n" + "".join(f"{i},{i + 1},{i % 2}\n" for i in range(20)))
    assert load_data(path, calib_size=4, eval_size=16).labelled
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,y\n1,2,0\nz,2,1\n")
    with pytest.raises(DataLoadError) as caught:
        load_data(bad)
    _one_line(caught, "row 3", "'a'")


def test_bundled_digits_npz_passed_as_a_file_is_the_digits_sample():
    preprocessing = _mlp_preprocessing()
    by_file = load_data(DIGITS_FILE, preprocessing=preprocessing)
    by_name = load_digits(preprocessing)
    assert by_file.fingerprint == by_name.fingerprint and by_file.input_shape == (64,)


def test_npz_with_common_key_names_and_column_labels(tmp_path):
    path = tmp_path / "xy.npz"
    rng = np.random.default_rng(1)
    np.savez(path, X=rng.random((30, 5), dtype=np.float32), y=(np.arange(30) % 4).reshape(30, 1))
    data = load_data(path, isolate=False, calib_size=6, eval_size=24)
    assert data.input_shape == (5,) and data.num_classes == 4


def test_cli_evaluates_digits_mlp_on_csv_npy_and_the_digits_npz(tmp_path, capsys):
    from qtradeoff import cli

    digits = load_digits(_mlp_preprocessing())
    inputs, labels = digits.eval_inputs[:120].numpy(), digits.eval_labels[:120].numpy()
    table = tmp_path / "digits.csv"
    header = ",".join(f"p{i}" for i in range(64)) + ",digit"
    table.write_text(header + "\n" + "\n".join(",".join(f"{v:.6g}" for v in row) + f",{label}"
                                               for row, label in zip(inputs, labels, strict=True)) + "\n")
    base = ["evaluate", "digits_mlp", "--latency", "none", "--json"]
    assert cli.main([*base, "--data", str(table), "--label-column", "digit"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] > 0.85
    array = tmp_path / "inputs.npy"
    np.save(array, inputs)
    assert cli.main([*base, "--data", str(array)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] is None and result["agreement"] == 1.0
    assert cli.main([*base, "--data", str(DIGITS_FILE), "--eval-size", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.85
