"""Mask engines side by side: structgen and its peers (llguidance, xgrammar, outlines-core) behind one adapter.

Every engine is driven the same way by the mask benchmark, so their numbers compare like for like:

    engine = create_engine("llguidance", tokenizer)       # once per worker process (tokenizer set-up excluded)
    compiled = engine.compile(schema)                      # raises -> "compile error"
    matcher = compiled.matcher()                           # a fresh per-instance state
    matcher.fill_mask(row)                                 # row: (ceil(V/32),) int32 numpy, LSB-first; the timed part
    matcher.advance(token_id) -> bool                      # False = the engine refused the token

A peer that is not installed raises `EngineUnavailable` from `create_engine`; the benchmark reports it as
"not installed" and carries on. Engine specs of the form "package.module:factory" load any other adapter
(the tests use this for engines that hang or crash on purpose).
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Callable, Protocol

import numpy as np

PEER_NAMES = ("structgen", "llguidance", "xgrammar", "outlines")


class EngineUnavailable(RuntimeError):
    """The engine's package is not installed (or cannot load); the benchmark reports it and continues."""


class Matcher(Protocol):
    """`first_visit() -> bool` is optional: an engine that keeps masks per state says whether the last fill met a new
    one (bench masks then reports first-visit and cached fills apart)."""

    def fill_mask(self, row: np.ndarray) -> None: ...

    def advance(self, token_id: int) -> bool: ...


class Compiled(Protocol):
    def matcher(self) -> Matcher: ...


class MaskEngine(Protocol):
    name: str

    def compile(self, schema: dict | bool) -> Compiled: ...


def mask_words(vocab_size: int) -> int:
    """int32 words in one bitmask row (the contract in docs/INTERFACES.md: ceil(V/32))."""
    return (vocab_size + 31) // 32


def token_allowed(row: np.ndarray, token_id: int) -> bool:
    """Bit `token_id % 32` of word `token_id // 32`, least-significant bit first."""
    return bool((int(row[token_id >> 5]) >> (token_id & 31)) & 1)


# --- structgen ---------------------------------------------------------------------------------------------

class _StructgenCompiled:
    def __init__(self, compiled):
        self._compiled = compiled

    def matcher(self) -> "_StructgenMatcher":
        return _StructgenMatcher(self._compiled.cursor(), self._compiled.index)


class _StructgenMatcher:
    def __init__(self, cursor, index):
        self._cursor = cursor
        self._index = index
        self._first = False

    def fill_mask(self, row: np.ndarray) -> None:
        before = self._index.num_masks
        self._cursor.fill_bitmask(row)
        self._first = self._index.num_masks > before

    def first_visit(self) -> bool:
        """Whether the last fill_mask met a state with no mask yet (its mask built, or shared by key, then)."""
        return self._first

    def advance(self, token_id: int) -> bool:
        return bool(self._cursor.advance(token_id))


class StructgenEngine:
    """structgen through its public API only (`structgen.compile_json_schema`, cursor, fill_bitmask)."""

    name = "structgen"

    def __init__(self, tokenizer, options: dict | None = None):
        # Every compile is measured cold, as the peers' are: no disk cache (read at compile time) ...
        os.environ["STRUCTGEN_DISABLE_DISK_CACHE"] = "1"
        try:
            from structgen import compile_json_schema
            from structgen.fsm import default_cache
        except (ImportError, AttributeError) as e:
            raise EngineUnavailable(f"structgen's compiler API is not available: {e}") from e
        self._compile = compile_json_schema
        self._cache = default_cache()
        self._tokenizer = tokenizer
        self._options = dict(options or {})
        # Vocabulary tables are built once at start-up, like each peer's tokenizer tables, not in the first TTFM.
        self._compile({"type": "boolean"}, tokenizer, **self._options).cursor().fill_bitmask(
            np.zeros(mask_words(tokenizer.vocab_size), np.int32))

    def compile(self, schema):
        self._cache.clear()  # ... and no in-memory hit when a schema repeats across splits
        return _StructgenCompiled(self._compile(schema, self._tokenizer, **self._options))


# --- llguidance --------------------------------------------------------------------------------------------

class _LLGuidanceCompiled:
    def __init__(self, pristine):
        self._pristine = pristine

    def matcher(self) -> "_LLGuidanceMatcher":
        return _LLGuidanceMatcher(self._pristine.deep_copy())


class _LLGuidanceMatcher:
    def __init__(self, matcher):
        self._m = matcher

    def fill_mask(self, row: np.ndarray) -> None:
        self._m.unsafe_compute_mask_ptr(row.ctypes.data, row.nbytes)

    def advance(self, token_id: int) -> bool:
        return bool(self._m.consume_token(token_id)) and not self._m.is_error()


class LLGuidanceEngine:
    """llguidance's JSON compiler with its default options (flexible whitespace, spec-default properties)."""

    name = "llguidance"

    def __init__(self, tokenizer):
        try:
            import llguidance
        except ImportError as e:
            raise EngineUnavailable("llguidance is not installed") from e
        self._ll = llguidance
        eos = sorted(tokenizer.eos_token_ids)
        # NOTE: llguidance takes the tokenizers JSON itself, so both sides share one vocabulary and merges.
        self._tokenizer = llguidance.LLTokenizer(tokenizer.hf.to_str(), n_vocab=tokenizer.vocab_size, eos_token=eos)

    def compile(self, schema):
        grammar = self._ll.LLMatcher.grammar_from_json_schema(json.dumps(schema))
        matcher = self._ll.LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return _LLGuidanceCompiled(matcher)


# --- xgrammar ----------------------------------------------------------------------------------------------

class _XGrammarCompiled:
    def __init__(self, xgr, compiled):
        self._xgr = xgr
        self._compiled = compiled

    def matcher(self) -> "_XGrammarMatcher":
        return _XGrammarMatcher(self._xgr.GrammarMatcher(self._compiled))


class _XGrammarMatcher:
    def __init__(self, matcher):
        self._m = matcher

    def fill_mask(self, row: np.ndarray) -> None:
        self._m.fill_next_token_bitmask(row.reshape(1, -1), 0)

    def advance(self, token_id: int) -> bool:
        return bool(self._m.accept_token(token_id))


class XGrammarEngine:
    """xgrammar with `strict_mode=False` (JSON Schema's own default: unlisted properties allowed)."""

    name = "xgrammar"

    def __init__(self, tokenizer):
        try:
            import xgrammar
            from transformers import PreTrainedTokenizerFast
        except ImportError as e:
            raise EngineUnavailable("xgrammar is not installed (pip install 'structgen[peers]')") from e
        self._xgr = xgrammar
        hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer.hf, eos_token=tokenizer.eos_token)
        info = xgrammar.TokenizerInfo.from_huggingface(
            hf, vocab_size=tokenizer.vocab_size, stop_token_ids=sorted(tokenizer.eos_token_ids))
        # One thread and no cache: each schema's compile is measured in full, like every other engine's.
        self._compiler = xgrammar.GrammarCompiler(info, max_threads=1, cache_enabled=False)

    def compile(self, schema):
        compiled = self._compiler.compile_json_schema(json.dumps(schema), any_whitespace=True, strict_mode=False)
        return _XGrammarCompiled(self._xgr, compiled)


# --- outlines-core -----------------------------------------------------------------------------------------

def _byte_level_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-level alphabet: printable stand-in character -> original byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)  # bytes without a printable glyph move past U+00FF, in order
            shifted += 1
    return {ch: b for b, ch in table.items()}


def token_bytes(tokenizer) -> dict[int, bytes]:
    """Raw bytes of every ordinary token of a byte-level BPE tokenizer (special tokens left out)."""
    decoder = _byte_level_decoder()
    out: dict[int, bytes] = {}
    for token, token_id in tokenizer.hf.get_vocab(with_added_tokens=False).items():
        if token_id in tokenizer.special_token_ids:
            continue
        try:
            out[token_id] = bytes(decoder[ch] for ch in token)
        except KeyError as e:
            raise EngineUnavailable(f"token {token!r} is not byte-level BPE; outlines adapter cannot map it") from e
    return out


class _OutlinesCompiled:
    def __init__(self, oc, index):
        self._oc = oc
        self._index = index

    def matcher(self) -> "_OutlinesMatcher":
        return _OutlinesMatcher(self._oc.Guide(self._index))


class _OutlinesMatcher:
    def __init__(self, guide):
        self._g = guide

    def fill_mask(self, row: np.ndarray) -> None:
        self._g.write_mask_into(row.ctypes.data, row.size, 4)

    def advance(self, token_id: int) -> bool:
        try:
            self._g.advance(token_id, return_tokens=False)
        except Exception:  # outlines-core raises on a token with no transition
            return False
        return True


class OutlinesEngine:
    """outlines-core: the schema becomes one regex, the regex x vocabulary index is built eagerly."""

    name = "outlines"

    def __init__(self, tokenizer):
        try:
            import outlines_core
            from outlines_core.json_schema import build_regex_from_schema
        except ImportError as e:
            raise EngineUnavailable("outlines-core is not installed") from e
        self._oc = outlines_core
        self._build_regex = build_regex_from_schema
        (eos,) = sorted(tokenizer.eos_token_ids)[:1]
        by_bytes: dict[bytes, list[int]] = {}
        for token_id, raw in token_bytes(tokenizer).items():
            by_bytes.setdefault(raw, []).append(token_id)
        self._vocabulary = outlines_core.Vocabulary(eos, by_bytes)

    def compile(self, schema):
        regex = self._build_regex(json.dumps(schema))
        return _OutlinesCompiled(self._oc, self._oc.Index(regex, self._vocabulary))


# --- registry ----------------------------------------------------------------------------------------------

_BUILTIN: dict[str, Callable] = {
    "structgen": StructgenEngine,
    "llguidance": LLGuidanceEngine,
    "xgrammar": XGrammarEngine,
    "outlines": OutlinesEngine,
}


def create_engine(spec: str, tokenizer, options: dict | None = None) -> MaskEngine:
    """Build the engine named `spec` ("structgen", a peer name, or "module:factory") for `tokenizer`.

    `options` go to structgen's compiler only (e.g. {"extra_properties": True}); peers keep their defaults.
    Raises EngineUnavailable when the engine's package is missing, ValueError for an unknown name.
    """
    if spec == "structgen":
        return StructgenEngine(tokenizer, options)
    if spec in _BUILTIN:
        return _BUILTIN[spec](tokenizer)
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise EngineUnavailable(f"cannot load engine {spec!r}: {e}") from e
        try:
            return factory(tokenizer)
        except ImportError as e:  # the adapter loaded but its package did not
            raise EngineUnavailable(f"{spec}: {e}") from e
    raise ValueError(f"unknown engine {spec!r}; choose from {', '.join(PEER_NAMES)} or give module:factory")
