"""Sampling: greedy/temperature/top-k/top-p, per-request seeds independent of batch composition, the statistical
shape of the draws, and the speculative accept/reject rule."""

from __future__ import annotations

import pytest
import torch

from structgen.kernels.sampling import SamplingBatch, sample, uniform_noise

from sampling_stats import chi_square_z  # tests/kernels/sampling_stats.py (pytest puts this folder on sys.path)

V = 50


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, V, generator=torch.Generator().manual_seed(seed)) * 2


def test_greedy_is_argmax():
    logits = _logits(4)
    params = SamplingBatch.from_lists([0.0] * 4, [0] * 4, [1.0] * 4, [1, 2, 3, 4], [0] * 4)
    assert torch.equal(sample(logits, params), logits.argmax(-1))


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (1.0, 10, 0.5)])
def test_same_seed_same_token_whatever_else_is_in_the_batch(temperature, top_k, top_p):
    target = _logits(1, seed=9)[0]
    alone = []
    for step in range(20):
        p = SamplingBatch.from_lists([temperature], [top_k], [top_p], [1234], [step])
        alone.append(int(sample(target[None].clone(), p)[0]))
    # the same row, at a different index, among rows with every other kind of parameters
    others = _logits(15, seed=3)
    mixed = []
    for step in range(20):
        logits = torch.cat([others[:6], target[None], others[6:]])
        temps = [0.0, 1.0, 0.5, 2.0, 1.0, 0.9, temperature, 1.0, 0.0, 1.1, 1.0, 0.3, 1.0, 0.8, 1.0, 1.0]
        ks = [0, 3, 0, 0, 20, 1, top_k, 0, 0, 7, 0, 0, 2, 0, 0, 0]
        ps = [1.0, 1.0, 0.9, 0.3, 1.0, 1.0, top_p, 0.95, 1.0, 1.0, 0.5, 1.0, 1.0, 0.7, 1.0, 1.0]
        seeds = [7, 8, 9, 10, 11, 12, 1234, 13, 14, 15, 16, 17, 18, 19, 20, 21]
        p = SamplingBatch.from_lists(temps, ks, ps, seeds, [step * 3 + i for i in range(16)][:6] + [step]
                                     + [step * 3 + i for i in range(16)][7:])
        mixed.append(int(sample(logits, p)[6]))
    assert mixed == alone
    assert len(set(alone)) > 1  # the draws do vary from step to step


def test_different_seeds_follow_the_softmax_distribution():
    logits = _logits(1, seed=4)[0]
    n = 5000
    params = SamplingBatch.from_lists([1.0] * n, [0] * n, [1.0] * n, list(range(n)), [0] * n)
    toks = sample(logits.expand(n, V).clone(), params)
    probs = torch.softmax(logits, 0)
    common = probs > 0.01  # bins with enough expected mass for chi-square
    counts = torch.bincount(toks, minlength=V)
    z = chi_square_z(torch.cat([counts[common], counts[~common].sum().view(1)]),
                     torch.cat([probs[common], probs[~common].sum().view(1)]))
    assert z < 3.7


def test_temperature_sharpens():
    logits = _logits(1, seed=5)[0]
    n = 2000

    def top_share(t):
        params = SamplingBatch.from_lists([t] * n, [0] * n, [1.0] * n, list(range(n)), [0] * n)
        return float((sample(logits.expand(n, V).clone(), params) == logits.argmax()).float().mean())

    assert top_share(0.2) > top_share(1.0) + 0.2


def test_top_k_and_top_p_restrict_the_support():
    logits = _logits(1, seed=6)[0]
    n = 3000
    order = logits.argsort(descending=True)
    params = SamplingBatch.from_lists([1.5] * n, [3] * n, [1.0] * n, list(range(n)), [0] * n)
    assert set(sample(logits.expand(n, V).clone(), params).tolist()) == set(order[:3].tolist())
    probs = torch.softmax(logits, 0)[order]
    nucleus = int((probs.cumsum(0) - probs < 0.6).sum())
    params = SamplingBatch.from_lists([1.0] * n, [0] * n, [0.6] * n, list(range(n)), [0] * n)
    got = set(sample(logits.expand(n, V).clone(), params).tolist())
    assert got <= set(order[:nucleus].tolist()) and len(got) == nucleus


def test_masked_entries_are_never_sampled():
    logits = _logits(200, seed=7)
    logits[:, ::2] = float("-inf")
    params = SamplingBatch.from_lists([2.0] * 200, [0] * 200, [1.0] * 200, list(range(200)), [0] * 200)
    assert (sample(logits, params) % 2 == 1).all()


def test_a_row_with_nothing_allowed_is_a_value_error():
    logits = _logits(2)
    logits[1] = float("-inf")
    with pytest.raises(ValueError, match="no allowed token"):
        sample(logits, SamplingBatch.from_lists([1.0, 1.0], [0, 0], [1.0, 1.0], [1, 2], [0, 0]))


@pytest.mark.parametrize("bad", [dict(temperature=[-1.0]), dict(top_k=[-2]), dict(top_p=[0.0]), dict(seeds=[]),
                                 dict(min_p=[1.5]), dict(min_p=[0.1, 0.2])])
def test_bad_parameters_are_value_errors(bad):
    args = dict(temperature=[1.0], top_k=[0], top_p=[1.0], seeds=[1], steps=[0]) | bad
    with pytest.raises(ValueError):
        SamplingBatch.from_lists(**args)


def test_uniform_noise_is_uniform_and_keyed():
    seeds = torch.arange(20000)
    u = uniform_noise(seeds, torch.zeros_like(seeds))
    assert 0 <= float(u.min()) and float(u.max()) < 1
    counts = torch.histc(u.float(), bins=20, min=0, max=1)
    assert chi_square_z(counts, torch.ones(20)) < 3.7
    assert not torch.equal(u, uniform_noise(seeds, torch.ones_like(seeds)))  # step changes the draw
    assert torch.equal(u[5:6], uniform_noise(seeds[5:6], torch.zeros(1, dtype=torch.int64)))  # batch-independent


def test_min_p_keeps_the_tokens_within_a_factor_of_the_top_one_after_temperature():
    logits = _logits(1, seed=11)[0]
    n = 3000
    for t, m in [(1.0, 0.1), (0.5, 0.1), (2.0, 0.3)]:
        probs = torch.softmax(logits / t, 0)
        allowed = set((probs >= m * probs.max()).nonzero().view(-1).tolist())
        params = SamplingBatch.from_lists([t] * n, [0] * n, [1.0] * n, list(range(n)), [0] * n, min_p=[m] * n)
        got = set(sample(logits.expand(n, V).clone(), params).tolist())
        assert got == allowed, (t, m)


def test_min_p_rows_are_reproducible_in_any_batch_and_leave_the_logits_alone():
    logits = _logits(6, seed=12)
    before = logits.clone()
    full = SamplingBatch.from_lists([1.0, 0.0, 0.8, 1.2, 1.0, 0.7], [0, 0, 5, 0, 0, 0], [1.0, 1.0, 1.0, 0.9, 1.0, 1.0],
                                    [1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5], min_p=[0.05, 0.2, 0.0, 0.1, 0.0, 0.3])
    got = sample(logits, full)
    assert torch.equal(logits, before)
    for rows in ([2], [5, 0], [3, 1, 4]):
        assert torch.equal(sample(logits[rows], full.select(rows)), got[rows])


def test_select_without_min_p():
    params = SamplingBatch.from_lists([1.0, 0.5], [0, 3], [1.0, 0.5], [9, 8], [0, 0])
    sub = params.select([1])
    assert params.min_p is None and sub.min_p is None and sub.num_rows == 1 and int(sub.seeds[0]) == 8


# ---------------------------------------------------------------------------------------------------------------
# speculative accept/reject


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_draws_what_the_cpu_draws():
    """The draw is a pure function of (seed, step, lane), so a row samples the same token on either device; only
    float rounding at a CDF boundary may differ, hence 'nearly all' rather than 'all'."""
    n = 256
    logits = _logits(n, seed=21)
    temps = [0.0 if i % 5 == 0 else 0.5 + (i % 7) / 4 for i in range(n)]
    ks = [0 if i % 3 else 20 for i in range(n)]
    ps = [1.0 if i % 4 else 0.9 for i in range(n)]
    mins = [0.0 if i % 6 else 0.05 for i in range(n)]
    cpu = sample(logits, SamplingBatch.from_lists(temps, ks, ps, list(range(n)), [3] * n, min_p=mins))
    gpu = sample(logits.cuda(), SamplingBatch.from_lists(temps, ks, ps, list(range(n)), [3] * n, min_p=mins,
                                                         device="cuda")).cpu()
    assert (cpu == gpu).float().mean() >= 0.98
