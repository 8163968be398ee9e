"""The vocabulary as the token layer sees it: token id -> the exact bytes the token adds to the output.

Two tokenizer families are decoded exactly from `tokenizer.json`:
- byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM2): each character of a token string stands for one byte through
  the GPT-2 byte alphabet (printable bytes map to themselves, the rest to U+0100 + n).
- SentencePiece / metaspace (Llama 2, Mistral): `▁` is a space and `<0xNN>` pieces are raw bytes (byte fallback).

NOTE: added and special tokens map to no bytes: a constraint never allows them (EOS is handled on its own,
allowed exactly in final states). Tokens with no bytes are never allowed either.
"""

from __future__ import annotations

import functools
import json
import re
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_METASPACE = "\u2581"


@functools.lru_cache(maxsize=1)
def gpt2_unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's byte -> printable-character table used by byte-level BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    byte_to_char = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in byte_to_char:
            # Non-printable bytes are moved past U+00FF, in byte order.
            byte_to_char[b] = chr(256 + n)
            n += 1
    return {c: b for b, c in byte_to_char.items()}


def _byte_level_bytes(token: str) -> bytes | None:
    table = gpt2_unicode_to_byte()
    try:
        return bytes(table[c] for c in token)
    except KeyError:
        return None  # not a byte-level string (should not happen in a byte-level vocabulary)


def _metaspace_bytes(token: str, byte_fallback: bool) -> bytes:
    if byte_fallback:
        m = _BYTE_FALLBACK.match(token)
        if m:
            return bytes([int(m.group(1), 16)])
    return token.replace(_METASPACE, " ").encode("utf-8")


def _decoder_kinds(decoder: dict | None) -> set[str]:
    """All decoder type names in a (possibly nested Sequence) decoder definition."""
    if not decoder:
        return set()
    kinds = {decoder.get("type", "")}
    for d in decoder.get("decoders", []) or []:
        kinds |= _decoder_kinds(d)
    return kinds


def token_bytes_from_hf(hf) -> list[bytes]:
    """Bytes of every token id of a `tokenizers.Tokenizer` (b"" for added/special tokens and unused ids)."""
    spec = json.loads(hf.to_str())
    model = spec.get("model", {})
    kinds = _decoder_kinds(spec.get("decoder")) | _decoder_kinds(spec.get("pre_tokenizer"))
    vocab = hf.get_vocab(with_added_tokens=False)
    added_ids = set(hf.get_added_tokens_decoder())
    size = max(max(vocab.values(), default=-1), max(added_ids, default=-1)) + 1
    out: list[bytes] = [b""] * size
    if "ByteLevel" in kinds:
        convert: Callable[[str], bytes | None] = _byte_level_bytes
    elif kinds & {"Metaspace", "ByteFallback"} or _METASPACE in json.dumps(spec.get("decoder"), ensure_ascii=False):
        byte_fallback = bool(model.get("byte_fallback")) or "ByteFallback" in kinds
        convert = functools.partial(_metaspace_bytes, byte_fallback=byte_fallback)
    else:
        raise ValueError(
            f"unsupported tokenizer decoder {sorted(kinds) or 'none'}: structgen reads byte-level BPE and "
            "SentencePiece (metaspace / byte fallback) vocabularies"
        )
    for tok, i in vocab.items():
        if i in added_ids:
            continue
        b = convert(tok)
        out[i] = b if b is not None else b""
    return out


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """Token bytes plus the arrays the index walks the automaton with (built once per tokenizer).

    Attributes:
        token_bytes: bytes of each id (b"" = never allowed).
        vocab_size: ids 0..vocab_size-1; the bitmask covers ceil(vocab_size / 32) words.
        eos_token_ids: (E,) int32, allowed exactly in final states.
        fingerprint: the tokenizer's fingerprint (part of every cache key).
        walk_ids: (N,) int32 ids of the tokens that have bytes, sorted by first byte then length.
        walk_lengths: (N,) int32 byte length of each walk token.
        walk_bytes: (L, N) uint8, byte p of each walk token in row p (0-padded past its length);
            stored position-major so one position is a contiguous row to gather from.
        first_byte_start: (257,) int64, walk tokens with first byte b are walk_ids[start[b]:start[b+1]].
    """

    token_bytes: tuple[bytes, ...]
    vocab_size: int
    eos_token_ids: np.ndarray
    fingerprint: str
    walk_ids: np.ndarray = field(init=False, repr=False)
    walk_lengths: np.ndarray = field(init=False, repr=False)
    walk_bytes: np.ndarray = field(init=False, repr=False)
    first_byte_start: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        if self.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {self.vocab_size}")
        if len(self.token_bytes) > self.vocab_size:
            raise ValueError(f"{len(self.token_bytes)} token byte strings for a vocab_size of {self.vocab_size}")
        eos = np.asarray(sorted(int(i) for i in self.eos_token_ids), dtype=np.int32)
        if eos.size and (eos[0] < 0 or eos[-1] >= self.vocab_size):
            raise ValueError(f"eos_token_ids {eos.tolist()} outside the vocabulary (size {self.vocab_size})")
        eos_set = set(eos.tolist())
        ids = [i for i, b in enumerate(self.token_bytes) if b and i not in eos_set]
        # Sorting by first byte makes the first position a handful of contiguous slices.
        ids.sort(key=lambda i: (self.token_bytes[i][0], len(self.token_bytes[i])))
        n = len(ids)
        lengths = np.fromiter((len(self.token_bytes[i]) for i in ids), dtype=np.int32, count=n)
        max_len = int(lengths.max()) if n else 0
        flat = np.zeros((n, max_len), dtype=np.uint8)  # (N, L)
        for row, i in enumerate(ids):
            b = self.token_bytes[i]
            flat[row, : len(b)] = np.frombuffer(b, dtype=np.uint8)
        firsts = flat[:, 0] if n else np.zeros(0, dtype=np.uint8)
        start = np.searchsorted(firsts, np.arange(257), side="left").astype(np.int64)  # (257,)
        set_ = object.__setattr__
        set_(self, "eos_token_ids", eos)
        set_(self, "token_bytes", tuple(self.token_bytes))
        set_(self, "walk_ids", np.asarray(ids, dtype=np.int32))
        set_(self, "walk_lengths", lengths)
        set_(self, "walk_bytes", np.ascontiguousarray(flat.T))  # (L, N)
        set_(self, "first_byte_start", start)

    @property
    def num_words(self) -> int:
        """int32 words per bitmask row."""
        return (self.vocab_size + 31) // 32

    @property
    def max_token_len(self) -> int:
        return int(self.walk_bytes.shape[0])

    @classmethod
    def from_token_bytes(cls, token_bytes: Sequence[bytes], eos_token_ids: Sequence[int], fingerprint: str,
                         vocab_size: int | None = None, special_token_ids: Sequence[int] = ()) -> "Vocabulary":
        """A vocabulary from explicit bytes (tests, tokenizers we cannot read). Special ids get no bytes."""
        special = set(special_token_ids) | set(eos_token_ids)
        tb = [b"" if i in special else bytes(b) for i, b in enumerate(token_bytes)]
        return cls(tuple(tb), int(vocab_size if vocab_size is not None else len(tb)),
                   np.asarray(list(eos_token_ids), dtype=np.int32), fingerprint)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "Vocabulary":
        """The vocabulary of a `structgen.Tokenizer` (or any object with vocab_size, eos_token_ids,
        special_token_ids, fingerprint and either `token_bytes()` or `hf`). Cached per tokenizer object."""
        try:
            cached = _BY_TOKENIZER.get(tokenizer)
        except TypeError:  # not weak-referenceable: build every time
            cached = None
        if cached is not None and cached.fingerprint == tokenizer.fingerprint:
            return cached
        if hasattr(tokenizer, "token_bytes"):
            tb = list(tokenizer.token_bytes())
        elif hasattr(tokenizer, "hf"):
            tb = token_bytes_from_hf(tokenizer.hf)
        else:
            raise TypeError(f"{type(tokenizer).__name__} exposes neither token_bytes() nor hf: not a tokenizer")
        vocab = cls.from_token_bytes(tb, sorted(tokenizer.eos_token_ids), tokenizer.fingerprint,
                                     vocab_size=max(int(tokenizer.vocab_size), len(tb)),
                                     special_token_ids=sorted(tokenizer.special_token_ids))
        try:
            _BY_TOKENIZER[tokenizer] = vocab  # building takes ~0.1 s for a 50k vocabulary: once per tokenizer
        except TypeError:
            pass
        return vocab


_BY_TOKENIZER: "weakref.WeakKeyDictionary[object, Vocabulary]" = weakref.WeakKeyDictionary()
