"""Prompt lookup: the n-gram index (PromptLookup), the leading-space fallback, and LookupProposer's cut of a
proposal where the constraint rejects it."""

from __future__ import annotations

import numpy as np
import pytest

import structgen
from structgen.engine.requests import GenerateRequest
from structgen.engine.sequence import Sequence
from structgen.engine.speculation.lookup import LookupProposer, PromptLookup, space_aliases
from structgen.engine.speculation.proposer import DraftRequest


@pytest.fixture(scope="module")
def tok():
    return structgen.default_tokenizer()


def test_prompt_lookup_proposes_what_followed_the_latest_longest_match():
    pl = PromptLookup([1, 2, 3, 4, 5, 9, 2, 3, 7, 8], min_ngram=1, max_ngram=3)
    pl.extend([6, 2, 3])
    # "2 3" occurs at 1-2 and 6-7; "6 2 3" nowhere earlier: the 2-gram's latest match is followed by 7 8 6.
    assert pl.propose(3) == [7, 8, 6]
    pl.extend([4])
    # Now "2 3 4" matches the start (3-gram beats the newer 1-gram match of "4").
    assert pl.propose(2) == [5, 9]
    assert pl.propose(0) == []


def test_prompt_lookup_uses_the_uncommitted_suffix_and_never_matches_itself():
    pl = PromptLookup([10, 11, 12, 13], max_ngram=2)
    assert pl.propose(2) == []  # 13 only occurs as the trailing token
    assert pl.propose(2, suffix=[11]) == [12, 13]
    assert pl.propose(5, suffix=[10, 11]) == [12, 13]


def test_prompt_lookup_falls_back_to_the_leading_space_twin(tok):
    from structgen.engine.speculation.forced import vocabulary_bytes

    aliases = space_aliases(vocabulary_bytes(tok).tokens)
    new, space_new = tok.encode("New")[0], tok.encode(" New")[0]
    assert aliases[new] == space_new and space_new not in aliases
    doc = tok.encode("departing from New York on Friday")
    value = tok.encode('{"city":"New')
    assert value[-1] == new
    plain = PromptLookup(doc + value, max_ngram=3)
    assert plain.propose(2) == []
    twin = PromptLookup(doc + value, max_ngram=3, aliases=aliases)
    assert tok.decode(twin.propose(2)) == " York on"


def test_prompt_lookup_incremental_equals_fresh():
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 6, size=300).tolist()
    inc = PromptLookup(toks[:50], max_ngram=3)
    for i in range(50, 300, 7):
        inc.extend(toks[i:i + 7])
        fresh = PromptLookup(toks[:i + 7], max_ngram=3)
        assert inc.propose(4) == fresh.propose(4)


def test_prompt_lookup_rejects_bad_ngram_sizes():
    with pytest.raises(ValueError):
        PromptLookup([1], min_ngram=0)
    with pytest.raises(ValueError):
        PromptLookup([1], min_ngram=3, max_ngram=2)


def test_the_proposer_cuts_a_proposal_where_the_constraint_rejects_it_or_after_eos(tok):
    # (constrain_draft's cases without a cursor: a proposal ends after its first EOS.)
    eos = next(iter(tok.eos_token_ids))
    prop = LookupProposer(tok, tok.eos_token_ids)
    assert prop._admitted(None, [], tok.encode("ab") + [eos] + tok.encode("cd")) == len(tok.encode("ab")) + 1
    assert prop._admitted(None, [], [5, 6, 7]) == 3
    # With a constraint: the prompt holds "12-abcX!" earlier, the output so far is "12"; the lookup proposes what
    # followed, and the regex cuts it before "X".
    compiled = structgen.compile_regex(r"[0-9]{2,4}-[a-z]+")
    prompt = tok.encode("12") + tok.encode("-") + tok.encode("abc") + tok.encode("X!") + tok.encode(" ")
    seq = Sequence(GenerateRequest("r", prompt + tok.encode("12")))
    seq.cursor = compiled.cursor()
    assert all(seq.cursor.advance(t) for t in tok.encode("12"))
    got = prop.propose([DraftRequest(seq, 8)])[0]
    assert got == tok.encode("-") + tok.encode("abc")
    assert seq.cursor.num_advanced == len(tok.encode("12")), "the cursor must end where it started"
    with pytest.raises(RuntimeError):
        prop.propose([DraftRequest(seq, 8, prefix=tok.encode("X"))])   # a prefix the constraint rejects
