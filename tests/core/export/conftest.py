"""The export tests' shared fixture: one engine per model, built on first use, shared by the package's test modules
(package scope: test_export and test_export_rounding use the same digits engines)."""

import pytest
import torch
import torch.nn.functional as F

from qtradeoff.core import Engine, load_sample_model, sample_data_for

TORCHVISION = ("torchvision.resnet18", "torchvision.mobilenet_v3_small")
# The digits at the sample mobilenet's preprocessing: 3x32x32, where both architectures' last stage is at 1x1 (the
# 8x8 digits upscaled: a larger side adds cost, no information).
TORCHVISION_PREPROCESSING = {"size": 32, "channels": 3, "flatten": False, "mean": 0.3, "std": 0.4}
# Passes over the 1259 training digits (batch 32, Adam, one-cycle, one thread whatever the worker has: the weights
# depend on the reduction order): test accuracy 93.0 % (resnet18) and 90.3 % (mobilenet_v3_small), about 16 s and
# 10 s of training (2026-12-04). 16x16 inputs save about a third of resnet18's epoch (its late layers are at 1x1
# either way) but lose 3-4 points of accuracy.
TRAINING_EPOCHS = {"torchvision.resnet18": 1, "torchvision.mobilenet_v3_small": 2}


def train_briefly(module: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, epochs: int,
                  lr: float = 3e-3, batch: int = 32, seed: int = 0) -> torch.nn.Module:
    """Train ``module`` in place for a few ``epochs`` (seeded order), then re-estimate its BatchNorm statistics on
    ``inputs`` with the final weights: after so few steps the running averages (momentum 0.01 in mobilenet_v3)
    still hold mostly their initial values, and the model in eval mode would predict one class."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the trained weights depend on the reduction order: the same on any test worker
    try:
        return _train(module, inputs, labels, epochs, lr, batch, seed)
    finally:
        torch.set_num_threads(threads)


def _train(module, inputs, labels, epochs, lr, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(inputs), generator=generator) for _ in range(epochs)])
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=(len(order) + batch - 1) // batch)
    module.train()
    for start in range(0, len(order), batch):
        step = order[start:start + batch]
        loss = F.cross_entropy(module(inputs[step]), labels[step])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches seen
    with torch.no_grad():
        for start in range(0, len(inputs), 256):
            module(inputs[start:start + 256])
    for norm in norms:
        norm.momentum = 0.1
    return module.eval()


def torchvision_engine(folder, arch: str) -> Engine:
    """An engine of torchvision ``arch`` (10 classes, random init with seed 0) trained briefly on the digits' train
    split, with the digits' calibration and test splits as labelled data, so that exports are checked on accuracy.

    Trained because a random network does not survive W8A8, so its exports could not be checked on accuracy: a
    random mobilenet_v3_small loses the input's signal in the simulation as in the real int8 graph, and a random
    resnet18 amplifies the x86 int8 graph's extra requantizations (around each residual add) to 12 dB from the
    simulation, where the trained one stays at 31 dB.
    """
    from safetensors.torch import save_file

    from qtradeoff.core.loading import architectures
    from qtradeoff.core.loading.data import digits_split, load_digits
    from qtradeoff.core.loading.model_io import load_model

    torch.manual_seed(0)
    module = architectures.build(arch, num_classes=10)
    train_briefly(module, *digits_split("train", TORCHVISION_PREPROCESSING), epochs=TRAINING_EPOCHS[arch])
    path = folder / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    loaded = load_model(path, architecture=arch, isolate=False)
    return Engine(loaded, load_digits(TORCHVISION_PREPROCESSING))


@pytest.fixture(scope="package")
def engines(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            if name in TORCHVISION:
                cache[name] = torchvision_engine(tmp_path_factory.mktemp("torchvision"), name)
            else:
                loaded = load_sample_model(name)
                cache[name] = Engine(loaded, sample_data_for(loaded))
        return cache[name]

    return get
