"""Pruning masks: exact sparsity with ties, N:M, structured channels, threshold <-> sparsity."""

from __future__ import annotations

import pytest
import torch

from qtradeoff.core.compression.prune import (
    nm_mask,
    prune_mask,
    sparsity_for_threshold,
    sparsity_mask,
    structured_mask,
    weight_std,
)
from qtradeoff.core.config import PruneSpec


def _w(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.37, 0.5, 0.9, 0.999])
def test_target_sparsity_is_exact(sparsity):
    w = _w(32, 16, 3, 3)
    mask = prune_mask(w, PruneSpec("magnitude", sparsity=sparsity))
    assert int((~mask).sum()) == round(sparsity * w.numel())
    if 0 < sparsity:
        assert w[~mask].abs().max() <= w[mask].abs().min()  # the smallest magnitudes go


def test_target_sparsity_exact_with_ties_and_deterministic():
    w = torch.tensor([1.0, -1.0, 1.0, 0.5, 1.0, -1.0, 2.0, 1.0])  # six ties at |w| = 1
    mask = sparsity_mask(w, 0.5)
    assert int((~mask).sum()) == 4
    # the 0.5 goes first, then ties in index order
    assert mask.tolist() == [False, False, False, False, True, True, True, True]
    assert torch.equal(mask, sparsity_mask(w.clone(), 0.5))
    all_equal = torch.ones(10, 10)
    assert int((~sparsity_mask(all_equal, 0.3)).sum()) == 30


def test_threshold_and_relative_threshold():
    w = _w(64, 64)
    mask = prune_mask(w, PruneSpec("magnitude", threshold=0.5))
    assert torch.equal(mask, w.abs() >= 0.5)
    rel = prune_mask(w, PruneSpec("magnitude", threshold=0.5, relative=True))
    assert torch.equal(rel, w.abs() >= 0.5 * weight_std(w))
    assert prune_mask(w, PruneSpec()) is None


def test_sparsity_threshold_reporting_round_trip():
    w = _w(128, 64) * 0.05
    s = sparsity_for_threshold(w, 0.02)
    assert s == pytest.approx(float((w.abs() < 0.02).float().mean()))
    assert 0.2 < s < 0.5  # "threshold 0.02 -> ~31% sparsity" on N(0, 0.05)
    relative = sparsity_for_threshold(w, 0.4, relative=True)  # 0.4 std = 0.02 here
    assert relative == pytest.approx(float((w.abs() < 0.4 * w.std(correction=0)).float().mean()))


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8), (1, 2)])
def test_nm_keeps_exactly_n_of_every_m_along_input(n, m):
    w = _w(16, 32, 3, 3)
    mask = prune_mask(w, PruneSpec("nm", n=n, m=m))
    groups = mask.movedim(1, -1).reshape(-1, m)
    assert bool((groups.sum(dim=1) == n).all())
    magnitudes = w.abs().movedim(1, -1).reshape(-1, m)
    kept_min = torch.where(groups, magnitudes, torch.inf).amin(dim=1)
    pruned_max = torch.where(~groups, magnitudes, -torch.inf).amax(dim=1)
    assert bool((kept_min >= pruned_max).all())


def test_nm_linear_with_partial_group_and_transposed_axis():
    w = _w(4, 10)
    mask = nm_mask(w, 2, 4)
    assert mask[:, :8].reshape(4, 2, 4).sum(-1).eq(2).all()
    assert mask[:, 8:].all()  # a trailing group of 2 keeps min(n, 2)
    wt = _w(12, 3, 5)  # ConvTranspose: (in, out, k)
    mask_t = prune_mask(wt, PruneSpec("nm", n=2, m=4), out_axis=1, in_axis=0)
    assert mask_t.movedim(0, -1).reshape(-1, 4).sum(-1).eq(2).all()


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_structured_zeroes_whole_output_channels(norm):
    w = _w(20, 8, 3, 3)
    w[3] *= 0.01
    w[11] *= 0.02
    mask = prune_mask(w, PruneSpec("structured", sparsity=0.25, norm=norm))
    per_channel = mask.reshape(20, -1)
    kept = per_channel.all(dim=1)
    dropped = (~per_channel).all(dim=1)
    assert bool((kept | dropped).all())  # every channel entirely kept or entirely dropped
    assert int(dropped.sum()) == round(0.25 * 20)
    assert dropped[3] and dropped[11]
    transposed = structured_mask(_w(8, 6, 3), 0.5, norm, out_axis=1)
    assert int((~transposed).all(dim=(0, 2)).sum()) == 3
