"""The architectures of the test corpus (see build_corpus.py): hand-written ``torch.nn`` models of the kinds users
bring (sequence, audio, detection, seq2seq, multi-output, functionally-called weights) and small builders of
torchvision classifiers. Importable as ``sample_models.corpus_models`` so that state_dicts and safetensors name
their builder (``--architecture sample_models.corpus_models:lstm_classifier``) and full pickles find the classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 500
SEQ = 12


class RNNClassifier(nn.Module):
    """Embedding + one LSTM or GRU layer + a linear head on the last step."""

    def __init__(self, vocab: int = VOCAB, dim: int = 16, classes: int = 4, cell: str = "lstm"):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(dim, dim, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out[:, -1])


def lstm_classifier(**kwargs) -> nn.Module:
    return RNNClassifier(cell="lstm", **kwargs)


def gru_classifier(**kwargs) -> nn.Module:
    return RNNClassifier(cell="gru", **kwargs)


class TransformerClassifier(nn.Module):
    """Token embedding + learned positions + a Transformer encoder (MultiheadAttention inside) + mean pooling."""

    def __init__(self, vocab: int = VOCAB, dim: int = 16, classes: int = 4, seq: int = SEQ, layers: int = 1):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, seq, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 2, dim_feedforward=2 * dim, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens) + self.pos).mean(1))


class AudioConv1d(nn.Module):
    """A 1-D convolutional keyword-spotting model on raw waveforms (``1 × samples``)."""

    def __init__(self, classes: int = 6, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 9, stride=4, padding=4), nn.BatchNorm1d(width), nn.ReLU(),
            nn.Conv1d(width, 2 * width, 9, stride=4, padding=4), nn.BatchNorm1d(2 * width), nn.ReLU(),
            nn.Conv1d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1))
        self.head = nn.Linear(2 * width, classes)

    def forward(self, wave):
        return self.head(self.features(wave).flatten(1))


class Seq2Seq(nn.Module):
    """GRU encoder-decoder with teacher forcing: source and target token ids in, per-step target logits out
    (two named inputs)."""

    def __init__(self, vocab: int = VOCAB, dim: int = 16):
        super().__init__()
        self.src_embed = nn.Embedding(vocab, dim)
        self.tgt_embed = nn.Embedding(vocab, dim)
        self.encoder = nn.GRU(dim, dim, batch_first=True)
        self.decoder = nn.GRU(dim, dim, batch_first=True)
        self.project = nn.Linear(dim, vocab)

    def forward(self, src, tgt):
        _, state = self.encoder(self.src_embed(src))
        out, _ = self.decoder(self.tgt_embed(tgt), state)
        return self.project(out)


class TinyDetector(nn.Module):
    """An SSD-like detector: a small conv backbone and, per cell of its 4×4 grid and anchor, box offsets and
    class scores, returned as a dict."""

    def __init__(self, classes: int = 3, anchors: int = 2, width: int = 16):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4))
        self.boxes = nn.Conv2d(2 * width, anchors * 4, 3, padding=1)
        self.scores = nn.Conv2d(2 * width, anchors * classes, 3, padding=1)
        self.classes = classes

    def forward(self, image):
        features = self.backbone(image)
        n = image.shape[0]
        return {"boxes": self.boxes(features).permute(0, 2, 3, 1).reshape(n, -1, 4),
                "scores": self.scores(features).permute(0, 2, 3, 1).reshape(n, -1, self.classes)}


class MultiHead(nn.Module):
    """A shared MLP trunk with two heads (class scores and a regression value), returned as a tuple."""

    def __init__(self, features: int = 20, classes: int = 5):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.classify = nn.Linear(32, classes)
        self.regress = nn.Linear(32, 1)

    def forward(self, x):
        shared = self.trunk(x)
        return self.classify(shared), self.regress(shared)


class FunctionalAttention(nn.Module):
    """Self-attention whose projections are parameters called with ``F.linear`` (as Swin's and many research
    models' are), not ``nn.Linear`` modules."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3 * dim, dim) / math.sqrt(dim))
        self.bias = nn.Parameter(torch.zeros(3 * dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = F.linear(x, self.weight, self.bias).chunk(3, dim=-1)
        attention = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return self.proj(attention @ v)


class PatchTransformer(nn.Module):
    """A tiny vision transformer on 4×4 patches with functionally-called attention weights."""

    def __init__(self, classes: int = 10, dim: int = 16, patch: int = 4, channels: int = 3):
        super().__init__()
        self.patches = nn.Conv2d(channels, dim, patch, stride=patch)
        self.attention = FunctionalAttention(dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, image):
        tokens = self.patches(image).flatten(2).transpose(1, 2)
        tokens = tokens + self.attention(self.norm(tokens))
        return self.head(tokens.mean(1))


class TabularMLP(nn.Module):
    def __init__(self, features: int = 20, classes: int = 3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, classes))

    def forward(self, x):
        return self.net(x)


class ImageAndTabular(nn.Module):
    """Two inputs of different kinds: an image and a feature vector, fused before the head."""

    def __init__(self, features: int = 8, classes: int = 4):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.tab = nn.Linear(features, 8)
        self.head = nn.Linear(16, classes)

    def forward(self, image, features):
        return self.head(torch.cat([self.conv(image).flatten(1), torch.relu(self.tab(features))], 1))


def _torchvision_models():
    from qtradeoff.core import tvcompat  # torchvision's Python parts even when its C++ ops cannot load

    return tvcompat.models()


def resnet18(num_classes: int = 10) -> nn.Module:
    return _torchvision_models().resnet18(weights=None, num_classes=num_classes)


def mobilenet_v3_small(num_classes: int = 10) -> nn.Module:
    return _torchvision_models().mobilenet_v3_small(weights=None, num_classes=num_classes)


def squeezenet(num_classes: int = 10) -> nn.Module:
    return _torchvision_models().squeezenet1_1(weights=None, num_classes=num_classes)


def lraspp(num_classes: int = 3) -> nn.Module:
    return _torchvision_models().segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                        num_classes=num_classes)
