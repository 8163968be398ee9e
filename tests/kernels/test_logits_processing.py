"""Logits processing (structgen/kernels/logits_processing.py): the batched pass equals the per-row reference on
random inputs, each feature does what its definition says, and a step that uses nothing builds nothing."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from structgen.engine.requests import SamplingParams
from structgen.kernels.logits_processing import (DRY_COPY_CONTEXT, DRY_MAX_MATCH, LogitsProcessing, RowHistory,
                                                  dry_penalty_lengths, prompt_has_span, reference_process_row)

V = 40


def _random_params(rng: random.Random) -> SamplingParams:
    """Each feature on for about half the rows, with random values in range."""
    kw = {}
    if rng.random() < 0.5:
        kw["logit_bias"] = {rng.randrange(V): rng.uniform(-100, 100) for _ in range(rng.randrange(1, 4))}
    if rng.random() < 0.5:
        kw["frequency_penalty"] = rng.uniform(-2, 2)
    if rng.random() < 0.5:
        kw["presence_penalty"] = rng.uniform(-2, 2)
    if rng.random() < 0.5:
        kw["repetition_penalty"] = rng.uniform(0.5, 2.0)
    if rng.random() < 0.5:
        kw.update(dry_multiplier=rng.uniform(0.1, 2), dry_base=rng.uniform(1.0, 2.5),
                  dry_allowed_length=rng.randrange(1, 4), dry_range=rng.choice([0, 0, 5, 30]))
    return SamplingParams(**kw)


def _repetitive(rng: random.Random, n: int) -> list[int]:
    """Token lists with loops in them (so DRY finds long matches) over a small alphabet."""
    out: list[int] = []
    while len(out) < n:
        if out and rng.random() < 0.5:
            start = rng.randrange(len(out))
            out.extend(out[start:start + rng.randrange(1, 12)])
        else:
            out.append(rng.randrange(V // 2))
    return out[:n]


@pytest.mark.parametrize("seed", range(6))
def test_batched_equals_the_per_row_reference(seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(12):
        if rng.random() < 0.15:
            rows.append(None)
            continue
        output = _repetitive(rng, rng.randrange(0, 80))
        prompt = _repetitive(rng, rng.randrange(1, 30))
        if output and rng.random() < 0.5:
            # the output copies a span of the prompt (DRY's prompt-copy exemption must agree with the reference)
            start = rng.randrange(len(output))
            prompt = prompt + output[start:start + rng.randrange(2, 16)] + prompt[:3]
        rows.append(RowHistory(_random_params(rng), prompt, output))
    logits = torch.randn(len(rows), V, generator=torch.Generator().manual_seed(seed)) * 3
    logits[:, ::7] = float("-inf")  # masked-looking entries stay -inf
    proc = LogitsProcessing.build(rows)
    got = proc.apply_(logits.clone()) if proc is not None else logits.clone()
    for i, r in enumerate(rows):
        want = logits[i] if r is None else reference_process_row(logits[i], r.params, r.prompt, r.output)
        torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-4, msg=f"row {i}: {r}")


def test_nothing_used_builds_nothing_and_neutral_rows_stay_bit_identical():
    plain = RowHistory(SamplingParams(), [1, 2], [3, 3, 3])
    assert LogitsProcessing.build([plain, None, plain]) is None
    logits = torch.randn(3, V)
    proc = LogitsProcessing.build([plain, RowHistory(SamplingParams(frequency_penalty=1.0, repetition_penalty=1.3,
                                                                    dry_multiplier=1.0, logit_bias={4: 5.0}),
                                                     [1, 2], [3, 4, 3, 4, 3]), None])
    out = proc.apply_(logits.clone())
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])
    assert not torch.equal(out[1], logits[1])


def test_openai_penalties_count_the_output_only():
    p = SamplingParams(frequency_penalty=0.5, presence_penalty=0.25)
    logits = torch.zeros(1, V)
    out = LogitsProcessing.build([RowHistory(p, [7, 7, 7], [5, 5, 6])]).apply_(logits)
    assert out[0, 5] == pytest.approx(-(0.5 * 2 + 0.25)) and out[0, 6] == pytest.approx(-0.75)
    assert out[0, 7] == 0  # a prompt token is not penalized by OpenAI's penalties


def test_repetition_penalty_divides_positive_and_multiplies_negative_over_prompt_and_output():
    p = SamplingParams(repetition_penalty=2.0)
    logits = torch.zeros(1, V)
    logits[0, 1], logits[0, 2], logits[0, 3] = 4.0, -4.0, 4.0
    out = LogitsProcessing.build([RowHistory(p, [1], [2])]).apply_(logits)
    assert out[0, 1] == 2.0 and out[0, 2] == -8.0 and out[0, 3] == 4.0


def test_logit_bias_adds():
    out = LogitsProcessing.build([RowHistory(SamplingParams(logit_bias={3: -100.0, 9: 2.5}), (), ())]).apply_(
        torch.ones(1, V))
    assert out[0, 3] == -99.0 and out[0, 9] == 3.5 and out[0, 0] == 1.0


def test_dry_penalizes_the_token_that_extends_a_repeat_of_the_output_tail():
    # output: a b c d a b c  -> the tail "a b c" (3 tokens) occurred before, followed by d: d gets base^(3-2)
    a, b, c, d = 10, 11, 12, 13
    p = SamplingParams(dry_multiplier=0.8, dry_base=2.0, dry_allowed_length=2)
    out = LogitsProcessing.build([RowHistory(p, (), [a, b, c, d, a, b, c])]).apply_(torch.zeros(1, V))
    assert out[0, d] == pytest.approx(-0.8 * 2.0)
    assert int((out[0] != 0).sum()) == 1
    # a match shorter than the allowed length is free
    p3 = SamplingParams(dry_multiplier=0.8, dry_base=2.0, dry_allowed_length=4)
    assert LogitsProcessing.build([RowHistory(p3, (), [a, b, c, d, a, b, c])]) \
        .apply_(torch.zeros(1, V)).abs().sum() == 0


def test_dry_never_counts_the_prompt():
    """Copying a prompt span is free: the same span in the prompt does not make the output a repeat."""
    span = [20, 21, 22, 23, 24, 25]
    p = SamplingParams(dry_multiplier=1.0, dry_allowed_length=2)
    out = LogitsProcessing.build([RowHistory(p, span + [1, 2] + span, span[:4])]).apply_(torch.zeros(1, V))
    assert out.abs().sum() == 0
    # ... copying it a second time is free too (a name in a title and again in its own field) ...
    out = LogitsProcessing.build([RowHistory(p, span, span + span[:4])]).apply_(torch.zeros(1, V))
    assert out.abs().sum() == 0
    # ... but a loop that runs past the prompt's span is penalized where it leaves it: after span + span the
    # output would restart the span (20), which never follows the whole span in the prompt.
    out = LogitsProcessing.build([RowHistory(p, span, span + span)]).apply_(torch.zeros(1, V))
    assert out[0, 20] < 0 and int((out[0] != 0).sum()) == 1
    # and a repeat of text the prompt does not hold is penalized as before
    out = LogitsProcessing.build([RowHistory(p, [1, 2, 3], span + span[:4])]).apply_(torch.zeros(1, V))
    assert out[0, 24] < 0


def test_dry_compares_only_the_last_tokens_of_a_repeat_with_the_prompt():
    """A repeat spanning JSON syntax the prompt lacks (`", "due": "2023-0` after `"issue": "2023-0`) still copies
    the prompt in its last DRY_COPY_CONTEXT tokens: the year and month of a second date are free."""
    key1, key2, sep, y, dash, zero, three, five = 30, 31, 32, 33, 34, 35, 36, 37
    prompt = [7, y, dash, zero, three, 8, y, dash, zero, five, 9]          # "2023-03 ... 2023-05" in the document
    output = [key1, sep, y, dash, zero, three, key2, sep, y, dash, zero]   # second date, after "2023-0"
    p = SamplingParams(dry_multiplier=1.0, dry_allowed_length=2)
    out = LogitsProcessing.build([RowHistory(p, prompt, output)]).apply_(torch.zeros(1, V))
    assert out[0, three] == 0 and out[0, five] == 0     # both continue a 4-token span of the prompt
    assert DRY_COPY_CONTEXT == 3
    # without the dates in the prompt the same repeat is penalized (the token that followed it before: three)
    out = LogitsProcessing.build([RowHistory(p, [7, 8, 9], output)]).apply_(torch.zeros(1, V))
    assert out[0, three] < 0


def test_prompt_has_span():
    prompt = np.array([5, 6, 7, 8, 6, 7, 9], dtype=np.int64)
    assert prompt_has_span(prompt, np.array([6, 7]), 9) and prompt_has_span(prompt, np.array([6, 7]), 8)
    assert not prompt_has_span(prompt, np.array([5, 7]), 8)
    assert prompt_has_span(prompt, np.array([], dtype=np.int64), 9)
    assert not prompt_has_span(prompt, np.array([8, 6, 7]), 8)
    assert not prompt_has_span(prompt, np.arange(7), 1)      # longer than the prompt


def test_dry_range_limits_the_search_and_long_matches_are_capped():
    loop = list(range(5)) * 20  # a long loop: the tail matches DRY_MAX_MATCH tokens and more
    lengths = dry_penalty_lengths(torch.tensor([loop]), torch.tensor([len(loop)]), V)
    assert int(lengths[0, 0]) == DRY_MAX_MATCH
    p = SamplingParams(dry_multiplier=1.0, dry_range=4)  # the last 4 tokens hold no repeat
    assert LogitsProcessing.build([RowHistory(p, (), loop)]).apply_(torch.zeros(1, V)).abs().sum() == 0


def test_wrong_row_count_is_a_value_error():
    proc = LogitsProcessing.build([RowHistory(SamplingParams(logit_bias={1: 1.0}), (), ())])
    with pytest.raises(ValueError):
        proc.apply_(torch.zeros(2, V))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_processing_matches_the_per_row_reference():
    rng = random.Random(5)
    rows = [RowHistory(_random_params(rng), _repetitive(rng, 20), _repetitive(rng, 60)) for _ in range(16)]
    logits = torch.randn(len(rows), V, generator=torch.Generator().manual_seed(5)) * 3
    proc = LogitsProcessing.build(rows, device="cuda")
    got = proc.apply_(logits.clone().cuda()).cpu() if proc is not None else logits
    for i, r in enumerate(rows):
        torch.testing.assert_close(got[i], reference_process_row(logits[i], r.params, r.prompt, r.output),
                                   rtol=1e-5, atol=1e-4, msg=f"row {i}: {r}")
