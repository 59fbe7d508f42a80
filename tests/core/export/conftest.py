"""The export tests' shared fixture: one engine per model, built on first use, shared by the package's test modules
(package scope: test_export and test_export_rounding use the same digits engines)."""

import pytest
import torch

from qtradeoff.core import Engine, load_sample_model, sample_data_for

TORCHVISION = ("torchvision.resnet18", "torchvision.mobilenet_v3_small")


def torchvision_engine(folder, arch: str) -> Engine:
    """An engine of torchvision ``arch`` with random weights (seed 0), 10 classes, 32x32 random inputs, no labels.

    The BatchNorm running statistics are re-estimated on the calibration inputs (weights stay random): with the
    default statistics (mean 0, variance 1) a random mobilenet_v3_small's activations vanish layer by layer and
    every input gets the same output, so no comparison of outputs would mean anything.
    """
    from safetensors.torch import save_file

    from qtradeoff.core.loading import architectures
    from qtradeoff.core.loading.data import EvalData, fingerprint
    from qtradeoff.core.loading.model_io import load_model

    torch.manual_seed(0)
    module = architectures.build(arch, num_classes=10)
    calib, evaluation = torch.randn(16, 3, 32, 32), torch.randn(24, 3, 32, 32)
    for norm in module.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the batches seen
    with torch.no_grad():
        module.train()(calib)
    module.eval()
    path = folder / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    loaded = load_model(path, architecture=arch, isolate=False)
    data = EvalData("random", calib, None, evaluation, None, 10, fingerprint(calib, evaluation))
    return Engine(loaded, data)


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
