"""structgen/bench/peers.py: every peer adapter agrees with jsonschema on small schemas, with the real tokenizer."""

import jsonschema
import numpy as np
import pytest

import structgen
from structgen.bench.peers import (EngineUnavailable, create_engine, mask_words, token_allowed, token_bytes)

SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}, "tag": {"enum": ["x", "y"]}},
          "required": ["id", "tag"]}
TEXTS = ['{"id":12,"tag":"x"}', '{"id":"12","tag":"x"}', '{"id":1,"tag":"z"}', '{"id":1}']


@pytest.fixture(scope="module")
def tokenizer():
    return structgen.default_tokenizer()


def _accepts(compiled, tokenizer, text) -> bool:
    m = compiled.matcher()
    row = np.zeros(mask_words(tokenizer.vocab_size), np.int32)
    for t in tokenizer.encode(text):
        row.fill(0)
        m.fill_mask(row)
        if not token_allowed(row, t) or not m.advance(t):
            return False
    row.fill(0)
    m.fill_mask(row)
    return any(token_allowed(row, e) for e in tokenizer.eos_token_ids)


@pytest.mark.parametrize("peer", ["structgen", "llguidance", "xgrammar", "outlines"])
def test_peer_accepts_exactly_what_the_schema_accepts(tokenizer, peer):
    try:
        engine = create_engine(peer, tokenizer)
    except EngineUnavailable as e:
        pytest.skip(f"{peer} not installed: {e}")
    compiled = engine.compile(SCHEMA)
    import json

    validator = jsonschema.Draft202012Validator(SCHEMA)
    for text in TEXTS:
        assert _accepts(compiled, tokenizer, text) == validator.is_valid(json.loads(text)), text


def test_token_allowed_reads_lsb_first_bits():
    row = np.zeros(2, np.int32)
    row.view(np.uint32)[1] = 1 << 31
    assert token_allowed(row, 63) and not token_allowed(row, 62) and not token_allowed(row, 31)
    assert mask_words(49152) == 1536 and mask_words(33) == 2


def test_byte_level_token_bytes_round_trip(tokenizer):
    table = token_bytes(tokenizer)
    ids = tokenizer.encode('{"name": "Zoë ✓"}\n')
    assert b"".join(table[i] for i in ids) == '{"name": "Zoë ✓"}\n'.encode()
    assert not set(table) & tokenizer.special_token_ids


def test_unknown_engine_names_are_refused(tokenizer):
    with pytest.raises(ValueError, match="unknown engine"):
        create_engine("nonesuch", tokenizer)
    with pytest.raises(EngineUnavailable):
        create_engine("no_such_module_xyz:factory", tokenizer)
