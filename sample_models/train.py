"""Regenerate the bundled sample models and data, deterministically, on CPU.

    python sample_models/train.py            # writes digits.npz, the model files and manifest.json

Data: the UCI optical handwritten digits (1797 images, 8×8, 10 classes) that ship
inside scikit-learn.  Split: stratified, fixed seed, into train / calib / test.
Each model is saved the way users save models, and the manifest records the
test accuracy measured by reloading the saved file.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from qtradeoff.core.loading import architectures, data  # noqa: E402

SEED = 20261124
SPLIT_FRACTIONS = {"calib": 0.10, "test": 0.20}  # the rest trains

CNN_PREPROCESSING = {"size": 32, "channels": 1, "flatten": False, "mean": 0.3, "std": 0.4}
MLP_PREPROCESSING = {"size": 8, "channels": 1, "flatten": True, "mean": 0.3, "std": 0.4}
MOBILENET_PREPROCESSING = {"size": 32, "channels": 3, "flatten": False, "mean": 0.3, "std": 0.4}
GRU_PREPROCESSING = {"size": 8, "channels": 1, "flatten": False, "mean": 0.3, "std": 0.4}  # rows = time steps

MODELS = [
    # name, architecture, preprocessing, file, format, epochs, learning rate
    ("digits_cnn", "qtradeoff.digits_cnn", CNN_PREPROCESSING, "digits_cnn.safetensors", "safetensors", 30, 3e-3),
    ("digits_mlp", "qtradeoff.digits_mlp", MLP_PREPROCESSING, "digits_mlp.pth", "state_dict", 40, 1e-3),
    ("mobilenet_v3_small_digits", "torchvision.mobilenet_v3_small", MOBILENET_PREPROCESSING,
     "mobilenet_v3_small_digits.pt", "pickle", 40, 2e-3),
    # a sequence model on the same real data: each digit read row by row
    ("digits_gru", "qtradeoff.digits_gru", GRU_PREPROCESSING, "digits_gru.safetensors", "safetensors", 60, 1e-2),
]


def write_digits() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # values 0..16
    labels = bunch.target.astype(np.uint8)
    rng = np.random.default_rng(SEED)
    splits: dict[str, list[int]] = {"train": [], "calib": [], "test": []}
    for cls in range(10):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = round(len(members) * SPLIT_FRACTIONS["test"])
        n_calib = round(len(members) * SPLIT_FRACTIONS["calib"])
        splits["test"] += members[:n_test].tolist()
        splits["calib"] += members[n_test:n_test + n_calib].tolist()
        splits["train"] += members[n_test + n_calib:].tolist()
    arrays = {f"{name}_idx": rng.permutation(np.array(idx, dtype=np.int64)) for name, idx in splits.items()}
    np.savez_compressed(data.DIGITS_FILE, images=images, labels=labels, **arrays)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 1/8 of the image side, for 4-D image batches."""
    if x.dim() != 4:
        return x
    shift = max(1, x.shape[-1] // 8)
    dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def train(model: nn.Module, preprocessing: dict, epochs: int, lr: float) -> nn.Module:
    inputs, labels = data.digits_split("train", preprocessing)
    generator = torch.Generator().manual_seed(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(inputs) + 63) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), 64):
            batch = order[start:start + 64]
            loss = F.cross_entropy(model(augment(inputs[batch], generator)), labels[batch], label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def test_accuracy(model: nn.Module, preprocessing: dict) -> float:
    inputs, labels = data.digits_split("test", preprocessing)
    with torch.inference_mode():
        predictions = model(inputs).argmax(1)
    return int((predictions == labels).sum()) / len(labels)


def save(model: nn.Module, name: str, file: str, fmt: str, preprocessing: dict) -> None:
    path = HERE / file
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path, metadata={"architecture": name})
    elif fmt == "state_dict":
        torch.save(model.state_dict(), path)
    elif fmt == "pickle":
        torch.save(model, path)
    elif fmt == "torchscript":
        example = data.digits_split("calib", preprocessing)[0][:1]
        torch.jit.save(torch.jit.trace(model, example), path)
    else:
        raise ValueError(fmt)


def _manifest_order(key: str) -> int:
    names = [name for name, *_ in MODELS]
    base = key.removesuffix("_torchscript")
    return 2 * names.index(base) + (key != base) if base in names else len(names) * 2


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Train the bundled sample models and write the manifest.")
    parser.add_argument("--only", nargs="*", metavar="NAME",
                        help="train only these samples and keep the others' files and manifest entries as they are")
    only = parser.parse_args(argv).only
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    if not only:  # the data file stays byte for byte what the other samples were trained and tested on
        write_digits()
    manifest: dict = {"dataset": {"file": "digits.npz", "source": "UCI optical recognition of handwritten digits "
                                  "(scikit-learn load_digits)", "splits": {}}, "models": {}}
    with np.load(data.DIGITS_FILE) as archive:
        for split in ("train", "calib", "test"):
            manifest["dataset"]["splits"][split] = int(len(archive[f"{split}_idx"]))
    if only:
        manifest["models"] = json.loads((HERE / "manifest.json").read_text())["models"]
    for name, arch, preprocessing, file, fmt, epochs, lr in MODELS:
        if only and name not in only:
            continue
        started = time.perf_counter()
        torch.manual_seed(SEED)
        model = train(architectures.build(arch, num_classes=10), preprocessing, epochs, lr)
        save(model, arch, file, fmt, preprocessing)
        variants = [(file, fmt)]
        if name == "digits_cnn":  # the same weights as a TorchScript archive, as many users ship them
            save(model, arch, "digits_cnn.torchscript.pt", "torchscript", preprocessing)
            variants.append(("digits_cnn.torchscript.pt", "torchscript"))
        reloaded = architectures.build(arch, num_classes=10)
        reloaded.load_state_dict(model.state_dict())
        accuracy = test_accuracy(reloaded.eval(), preprocessing)
        for variant_file, variant_fmt in variants:
            key = name if variant_file == file else name + "_torchscript"
            shape = [64] if preprocessing["flatten"] else [preprocessing["channels"], preprocessing["size"],
                                                          preprocessing["size"]]
            manifest["models"][key] = {
                "file": variant_file, "format": variant_fmt, "architecture": arch, "num_classes": 10,
                "input_shape": shape, "preprocessing": preprocessing, "test_accuracy": accuracy,
                "test_samples": manifest["dataset"]["splits"]["test"], "sha256": sha256(HERE / variant_file),
            }
        print(f"{name}: test accuracy {accuracy:.4f} ({time.perf_counter() - started:.0f} s)")
    manifest["models"] = {key: manifest["models"][key] for key in sorted(manifest["models"], key=_manifest_order)}
    manifest["default"] = "digits_cnn"
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
