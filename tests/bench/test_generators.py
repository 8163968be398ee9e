"""structgen/bench/generators.py: the peer logits processor masks exactly what the peer allows."""

import numpy as np
import pytest
import torch

import structgen
from structgen.bench.generators import MaskLogitsProcessor, allowed_from_row
from structgen.bench.peers import create_engine


def test_allowed_from_row_reads_lsb_first():
    row = np.zeros(2, np.int32)
    row.view(np.uint32)[0] = 0b101
    row.view(np.uint32)[1] = 1 << 31
    allowed = allowed_from_row(row, 64)
    assert np.flatnonzero(allowed).tolist() == [0, 2, 63]
    assert allowed_from_row(row, 40).shape == (40,)


def test_processor_with_llguidance_forces_and_masks():
    pytest.importorskip("llguidance")
    tok = structgen.default_tokenizer()
    compiled = create_engine("llguidance", tok).compile({"enum": ["alpha", "beta"]})
    proc = MaskLogitsProcessor(compiled, tok.vocab_size)
    prompt = torch.tensor([[1, 2, 3]])
    scores = torch.zeros(1, tok.vocab_size + 64)  # the model's vocab may be padded past the tokenizer's
    masked = proc(prompt, scores.clone())
    allowed = torch.isfinite(masked[0]).nonzero().flatten().tolist()
    quote = tok.encode('"')[0]
    assert quote in allowed and all(a < tok.vocab_size for a in allowed)
    # walk '"alpha"' and check that the end only allows EOS (a forced step)
    ids = prompt
    for t in tok.encode('"alpha"'):
        ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
        masked = proc(ids, scores.clone())
    assert torch.isfinite(masked[0]).nonzero().flatten().tolist() == sorted(tok.eos_token_ids)
    assert proc.forced_steps >= 1 and proc.failed is None
