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
import logging
import pickle
import re
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_METASPACE = "\u2581"
log = logging.getLogger(__name__)


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


@functools.lru_cache(maxsize=1)
def _byte_level_translation() -> dict[int, str]:
    """str.translate table turning a byte-level token string into latin-1 text whose code points are the bytes.

    Characters outside the GPT-2 alphabet become U+FFFF, which latin-1 cannot encode: such a token is rejected.
    """
    table = {c: 0xFFFF for c in range(256)}
    table.update({ord(ch): b for ch, b in gpt2_unicode_to_byte().items()})
    return table


def _byte_level_bytes(token: str) -> bytes | None:
    try:
        return token.translate(_byte_level_translation()).encode("latin-1")
    except UnicodeEncodeError:
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
        walk_ids: (N,) int32 ids of the tokens that have bytes, sorted by byte length, longest first.
        walk_lengths: (N,) int32 byte length of each walk token (non-increasing).
        walk_bytes: (L, N) uint8, byte p of each walk token in row p (0-padded past its length); stored
            position-major so one position is a contiguous row to gather from.
        longer_than: (L + 1,) int64, the walk tokens longer than p bytes are exactly walk positions
            [0, longer_than[p]) (the length sort makes them a prefix).
        by_first_byte: (N,) int64 walk positions grouped by first byte (ascending within a group);
            first_byte_start: (257,) int64, group b is by_first_byte[first_byte_start[b]:first_byte_start[b+1]].
    """

    token_bytes: tuple[bytes, ...]
    vocab_size: int
    eos_token_ids: np.ndarray
    fingerprint: str
    walk_ids: np.ndarray = field(init=False, repr=False)
    walk_lengths: np.ndarray = field(init=False, repr=False)
    walk_bytes: np.ndarray = field(init=False, repr=False)
    longer_than: np.ndarray = field(init=False, repr=False)
    by_first_byte: np.ndarray = field(init=False, repr=False)
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
        ids = np.asarray([i for i, b in enumerate(self.token_bytes) if b and i not in eos_set], dtype=np.int64)
        n = len(ids)
        blob = b"".join(self.token_bytes[i] for i in ids.tolist())
        lengths = np.fromiter((len(self.token_bytes[i]) for i in ids.tolist()), dtype=np.int32, count=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        data = np.frombuffer(blob, dtype=np.uint8)
        firsts = data[offsets[:-1]] if n else np.zeros(0, dtype=np.uint8)
        # Longest first: the tokens still walking at byte p are then a prefix of the order (see longer_than).
        order = np.lexsort((firsts, -lengths)) if n else np.zeros(0, dtype=np.int64)
        ids, lengths, starts_of, firsts = ids[order], lengths[order], offsets[:-1][order], firsts[order]
        max_len = int(lengths[0]) if n else 0
        flat = np.zeros((max_len, n), dtype=np.uint8)  # (L, N) byte p of walk token j at [p, j]
        for p in range(max_len):
            live = np.flatnonzero(lengths > p)
            flat[p, live] = data[starts_of[live] + p]
        longer_than = np.searchsorted(-lengths, -np.arange(max_len + 1), side="left").astype(np.int64)  # (L+1,)
        by_first = np.argsort(firsts, kind="stable").astype(np.int64)  # (N,)
        start = np.searchsorted(firsts[by_first], np.arange(257), side="left").astype(np.int64)  # (257,)
        set_ = object.__setattr__
        set_(self, "eos_token_ids", eos)
        set_(self, "token_bytes", tuple(self.token_bytes))
        set_(self, "walk_ids", ids.astype(np.int32))
        set_(self, "walk_lengths", lengths)
        set_(self, "walk_bytes", flat)
        set_(self, "longer_than", longer_than)
        set_(self, "by_first_byte", by_first)
        set_(self, "first_byte_start", start)

    @property
    def num_words(self) -> int:
        """int32 words per bitmask row."""
        return (self.vocab_size + 31) // 32

    @property
    def max_token_len(self) -> int:
        return int(self.walk_bytes.shape[0])

    @functools.cached_property
    def token_ids_by_bytes(self) -> dict[bytes, int]:
        """The walk tokens by their bytes (the smallest id where several tokens share bytes)."""
        out: dict[bytes, int] = {}
        for i in sorted(self.walk_ids.tolist(), reverse=True):
            out[self.token_bytes[i]] = i
        return out

    @functools.cached_property
    def byte_token_ids(self) -> np.ndarray:
        """(256,) int32: the token that is exactly byte b, or -1. Where every byte a constraint's shortest
        completions use has one, byte counts bound token counts (structgen/fsm/budget.py); byte-level BPE
        vocabularies have nearly all (SmolLM2 lacks 17 bytes: 6 control bytes, 0xF1, 0xF2 and invalid UTF-8)."""
        out = np.full(256, -1, dtype=np.int32)
        for data, i in self.token_ids_by_bytes.items():
            if len(data) == 1:
                out[data[0]] = i
        missing = int(np.count_nonzero(out < 0))
        if missing:
            log.debug("vocabulary %s: %d of 256 bytes have no single-byte token", self.fingerprint[:12], missing)
        out.flags.writeable = False
        return out

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
        special_token_ids, fingerprint and either `token_bytes()` or `hf`). Cached per fingerprint, in memory
        and (for `hf` tokenizers) on disk."""
        missing = [a for a in ("vocab_size", "eos_token_ids", "special_token_ids", "fingerprint")
                   if not hasattr(tokenizer, a)]
        if missing:
            raise TypeError(f"{type(tokenizer).__name__} is not a tokenizer (missing {', '.join(missing)})")
        fingerprint = tokenizer.fingerprint
        with _MEMO_LOCK:
            cached = _BY_FINGERPRINT.get(fingerprint)
        if cached is not None:
            return cached
        if hasattr(tokenizer, "token_bytes"):
            tb = list(tokenizer.token_bytes())
            vocab = cls.from_token_bytes(tb, sorted(tokenizer.eos_token_ids), tokenizer.fingerprint,
                                         vocab_size=max(int(tokenizer.vocab_size), len(tb)),
                                         special_token_ids=sorted(tokenizer.special_token_ids))
        elif hasattr(tokenizer, "hf"):
            vocab = _load(tokenizer.fingerprint)
            if vocab is None:
                tb = token_bytes_from_hf(tokenizer.hf)
                vocab = cls.from_token_bytes(tb, sorted(tokenizer.eos_token_ids), tokenizer.fingerprint,
                                             vocab_size=max(int(tokenizer.vocab_size), len(tb)),
                                             special_token_ids=sorted(tokenizer.special_token_ids))
                _store(vocab)
        else:
            raise TypeError(f"{type(tokenizer).__name__} exposes neither token_bytes() nor hf: not a tokenizer")
        with _MEMO_LOCK:
            _BY_FINGERPRINT[fingerprint] = vocab
            while len(_BY_FINGERPRINT) > _MEMO_SIZE:
                _BY_FINGERPRINT.pop(next(iter(_BY_FINGERPRINT)))
        return vocab


# The fingerprint hashes the tokenizer's whole definition, so equal fingerprints share one Vocabulary.
_MEMO_SIZE = 8
_BY_FINGERPRINT: dict[str, Vocabulary] = {}
_MEMO_LOCK = threading.Lock()


# ---- on disk: reading a 50k vocabulary out of tokenizer.json takes ~0.5 s, loading this file ~20 ms ----------

# Bump when the byte decoding or the walk arrays change: older files are then ignored and rewritten.
_DISK_FORMAT = 2


def _vocab_path(fingerprint: str):
    from .. import settings

    if settings.get("STRUCTGEN_DISABLE_DISK_CACHE"):
        return None
    folder = settings.cache_dir() / "fsm"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"vocab-{_DISK_FORMAT}-{fingerprint}.pkl"


def _load(fingerprint: str) -> Vocabulary | None:
    path = _vocab_path(fingerprint)
    if path is None or not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            vocab = pickle.load(fh)
        if not isinstance(vocab, Vocabulary) or vocab.fingerprint != fingerprint:
            raise ValueError("another tokenizer's vocabulary")
        return vocab
    except Exception as e:  # noqa: BLE001 - an unusable file is only a miss; it is rewritten
        log.warning("ignoring unusable vocabulary cache file %s (%s: %s)", path, type(e).__name__, e)
        return None


def _store(vocab: Vocabulary) -> None:
    from .cache import write_atomic

    path = _vocab_path(vocab.fingerprint)
    if path is not None:
        write_atomic(path, pickle.dumps(vocab, protocol=pickle.HIGHEST_PROTOCOL))
