"""The public compile API: constraint + tokenizer -> CompiledConstraint (cached in memory and on disk).

    c = structgen.compile_json_schema(schema)        # or compile_regex / compile_choice / compile_grammar
    cur = c.cursor(); cur.fill_bitmask(row); cur.advance(tok); cur.is_final(); cur.forced_tokens()

"Compile" = build the automaton + the initial state's mask, so compile errors surface here and the compile
time is the time to the first mask. Everything else is built lazily as decoding reaches it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import (ConstraintError, ConstraintTooComplexError, InvalidGrammarError, InvalidRegexError,
                      InvalidSchemaError)
from . import bitmask
from .automaton import ByteAutomaton, LiteralSetAutomaton
from .budget import TokenBounds
from .cache import MEMORY, default_cache, make_key
from .cursor import Cursor
from .index import DEAD, MAX_STATES_LIMIT, TokenIndex
from .json_schema.normalize import MAX_SCHEMA_NESTING, check_json_values
from .limits import CompileLimits
from .vocab import Vocabulary

KINDS = ("json_schema", "regex", "choice", "grammar")


class CompiledConstraint:
    """One constraint compiled against one tokenizer. Immutable from the outside; shared and thread-safe.

    Attributes:
        kind: "json_schema" | "regex" | "choice" | "grammar".
        key: the cache key (hex sha256).
        vocab_size: ids covered by masks; a bitmask row has ceil(vocab_size / 32) int32 words.
    """

    def __init__(self, kind: str, key: str, index: TokenIndex, tokenizer):
        self.kind = kind
        self.key = key
        self._index = index
        self._tokenizer = tokenizer
        self._eos_set = frozenset(int(i) for i in index.vocab.eos_token_ids)
        self._empty_mask = np.zeros(index.vocab.num_words, dtype=bitmask.DTYPE)  # (num_words,)
        self._empty_mask.flags.writeable = False
        self._forced: dict[int, list[int]] = {}
        self._forced_lock = threading.Lock()
        self._bounds: TokenBounds | None = None

    @property
    def vocab_size(self) -> int:
        return self._index.vocab.vocab_size

    @property
    def num_words(self) -> int:
        return self._index.vocab.num_words

    @property
    def num_states(self) -> int:
        """Automaton states materialized so far (grows as decoding visits new states)."""
        return self._index.num_states

    @property
    def version(self) -> int:
        """Bumped whenever tables or masks grow (the disk cache writes when it moved)."""
        return self._index.version

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def nbytes(self) -> int:
        """Bytes of its token tables and masks so far (what the compile cache's byte budget counts)."""
        return self._index.nbytes

    # ---- what a Cursor reads (structgen/fsm/cursor.py) -----------------------------------------------------

    @property
    def index(self) -> TokenIndex:
        """The token index: transitions, masks and finality per state (built lazily, shared, thread-safe)."""
        return self._index

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """The tokenizer's EOS ids: allowed exactly in final states."""
        return self._eos_set

    @property
    def empty_mask(self) -> np.ndarray:
        """(num_words,) int32, all zero, read-only: the mask after EOS."""
        return self._empty_mask

    def forced_tokens(self, state: int) -> list[int]:
        """The tokens that are the only legal continuation from `state` (a fresh list; see Cursor.forced_tokens)."""
        return self._forced_tokens(state)

    @property
    def bounds(self) -> TokenBounds:
        """Per-state bounds on the tokens still needed to finish (built lazily, shared, thread-safe)."""
        b = self._bounds
        if b is None:
            with self._forced_lock:
                if self._bounds is None:
                    self._bounds = TokenBounds(self._index)
                b = self._bounds
        return b

    def cursor(self) -> Cursor:
        """A fresh per-request cursor at the initial state."""
        return Cursor(self)

    def encode(self, text: str) -> list[int]:
        """The tokenizer's ids for `text` (no special tokens)."""
        return list(self._tokenizer.encode(text))

    def accepts(self, text: str) -> bool:
        """Walk encode(text): True iff every token is allowed and the end state is final."""
        return self.accepts_tokens(self.encode(text))

    def accepts_tokens(self, token_ids: Sequence[int]) -> bool:
        cur = self.cursor()
        return all(cur.advance(t) for t in token_ids) and cur.is_final()

    def save(self) -> bool:
        """Persist what was built so far (states reached while decoding included) to the disk cache."""
        return default_cache().save(self)

    def snapshot(self) -> dict:
        return {"kind": self.kind, "index": self._index.snapshot()}

    def _forced_tokens(self, state: int) -> list[int]:
        got = self._forced.get(state)
        if got is None:
            got = self._compute_forced(state)
            with self._forced_lock:
                self._forced[state] = got
        return list(got)

    def _compute_forced(self, state: int) -> list[int]:
        index = self._index
        data, end = index.forced_run(state)
        if not data:
            return []
        text, complete = _utf8_prefix(data)
        if not text:
            return []
        out: list[int] = []
        s = state
        for tok in self._tokenizer.encode(text):
            nxt = index.next_state(s, tok)
            if nxt == DEAD:
                complete = False
                break
            out.append(tok)
            s = nxt
        # The last token could merge with the bytes that follow unless nothing (but EOS) can follow.
        if out and not (complete and s == end and index.is_terminated(end)):
            out.pop()
        return out

    def __repr__(self) -> str:
        return (f"CompiledConstraint(kind={self.kind!r}, key={self.key[:12]}, states={self.num_states}, "
                f"vocab_size={self.vocab_size})")


def _utf8_prefix(data: bytes) -> tuple[str, bool]:
    """The longest prefix of `data` that is whole UTF-8 characters, and whether that is all of `data`."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8"), cut == len(data)
        except UnicodeDecodeError:
            continue
    return "", False


# ---- normalisation of the constraint value (-> the automaton builder and the canonical text of the key) ----


def _schema_value(value: Any) -> dict | bool:
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="strict")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise InvalidSchemaError(f"schema is not valid JSON: {e}") from None
        except RecursionError:
            raise InvalidSchemaError(f"schema nests deeper than {MAX_SCHEMA_NESTING} objects/arrays") from None
    if not isinstance(value, (dict, bool)):
        raise InvalidSchemaError(f"a JSON Schema is an object or a boolean, got {type(value).__name__}")
    # NOTE: before the cache key is made: json.dumps recurses, and allows no inf.
    check_json_values(value)
    return value


def _canonical_json(value: Any) -> str:
    # NOTE: key order is kept, not sorted: `properties` order decides the order of keys in the output, so two
    # schemas that differ only in it compile to different automata.
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"schema must be made of JSON values: {e}") from None
    _check_unicode(text, "the schema")
    return text


def _check_unicode(text: str, what: str, error=InvalidSchemaError) -> None:
    """Refuse lone surrogates ("\\ud800" in JSON): no UTF-8 output can spell them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        detail = (f"{what} holds a lone surrogate ({text[e.start]!r} at character {e.start}), which is not Unicode "
                  f"text and cannot be generated")
        raise (InvalidRegexError(text, e.start, detail) if error is InvalidRegexError else error(detail)) from None


def _choices_value(value: Any) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"choices must be a list of strings, got {type(value).__name__}")
    bad = [c for c in value if not isinstance(c, str)]
    if bad:
        raise TypeError(f"choices must be strings, got {type(bad[0]).__name__}")
    if not value:
        raise ConstraintError("the choice list is empty: give at least one choice")
    return list(value)


def _check_options(fn, options: dict, what: str) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY
                                     or p.kind is p.POSITIONAL_OR_KEYWORD})
    if unknown:
        raise TypeError(f"unknown {what} option(s) {unknown}")


def _automaton_builder(kind: str, value: Any, options: dict):
    """(canonical text, options as keyed, build(limits: CompileLimits) -> the automaton)."""
    if kind == "json_schema":
        schema = _schema_value(value)
        options = {"extra_properties": False, **options}
        if not isinstance(options["extra_properties"], bool):
            raise TypeError("extra_properties must be a bool")

        def build(limits: CompileLimits) -> ByteAutomaton:
            from .json_schema import schema_automaton

            _check_options(schema_automaton, options, "JSON Schema")
            return schema_automaton(schema, limits=limits, **options)

        return _canonical_json(schema), options, build
    if kind == "regex":
        if not isinstance(value, str):
            raise TypeError(f"a regex pattern is a str, got {type(value).__name__}")
        _check_unicode(value, "the pattern", InvalidRegexError)
        if options:
            raise TypeError(f"regex constraints take no options, got {sorted(options)}")

        def build(limits: CompileLimits) -> ByteAutomaton:
            from .regex import regex_automaton

            # NOTE: the compile's own limit from now; a request's shorter deadline is enforced around the whole
            # compile (the worker is killed, or _build_compiled checks it after this returns).
            return regex_automaton(value, deadline=time.monotonic() + limits.compile_timeout_s)

        return value, options, build
    if kind == "choice":
        choices = _choices_value(value)
        if options:
            raise TypeError(f"choice constraints take no options, got {sorted(options)}")

        def build(limits: CompileLimits) -> ByteAutomaton:
            try:
                from .regex import choice_automaton
            except ImportError:  # the regex module is optional for choices: a literal set is exact
                return LiteralSetAutomaton([c.encode("utf-8") for c in choices])
            return choice_automaton(choices)

        text = json.dumps(choices, ensure_ascii=False, separators=(",", ":"))
        _check_unicode(text, "the choice list", ConstraintError)
        return text, options, build
    if kind == "grammar":
        return _grammar_builder(value, options)
    raise ValueError(f"unknown constraint kind {kind!r}: expected one of {', '.join(KINDS)}")


def _grammar_builder(value: Any, options: dict):
    """options: syntax "ebnf" | "lark" (None or absent: detected, structgen.fsm.grammar.detect_syntax) and start (the
    start rule; None: "root" for EBNF, "start" for Lark). Both are keyed as resolved, so a detected syntax and the
    same one named share an entry."""
    from .grammar import SYNTAXES, detect_syntax

    if not isinstance(value, str):
        raise TypeError(f"a grammar is a str, got {type(value).__name__}")
    _check_unicode(value, "the grammar", InvalidGrammarError)
    unknown = sorted(set(options) - {"syntax", "start"})
    if unknown:
        raise TypeError(f"unknown grammar option(s) {unknown}: a grammar takes 'syntax' and 'start'")
    syntax = options.get("syntax")
    if syntax is None:
        syntax = detect_syntax(value)
    elif syntax not in SYNTAXES:
        raise ConstraintError(f"grammar syntax must be one of {', '.join(map(repr, SYNTAXES))}, got {syntax!r}")
    start = options.get("start")
    if start is None:
        start = "root" if syntax == "ebnf" else "start"
    elif not isinstance(start, str) or not start:
        raise ConstraintError(f"the grammar's start rule must be a rule name, got {start!r}")

    def build(limits: CompileLimits) -> ByteAutomaton:
        from .grammar import grammar_automaton

        return grammar_automaton(value, syntax=syntax, start=start, max_states=limits.max_states,
                                 deadline=time.monotonic() + limits.compile_timeout_s)

    return value, {"syntax": syntax, "start": start}, build


def _resolve_tokenizer(tokenizer):
    if tokenizer is None:
        from ..tokenizer import default_tokenizer

        return default_tokenizer()
    for attr in ("vocab_size", "eos_token_ids", "special_token_ids", "fingerprint", "encode"):
        if not hasattr(tokenizer, attr):
            raise TypeError(f"tokenizer must be a structgen.Tokenizer (missing {attr!r}), "
                            f"got {type(tokenizer).__name__}")
    return tokenizer


_KEYS_MEMO_SIZE = 1024
# (kind, sha256 of the text, options, fingerprint) -> cache key; oldest dropped first.
# NOTE: a digest, not the text: 1024 schemas of a few MB each would otherwise stay in memory for good.
_KEYS_BY_TEXT: dict[tuple, str] = {}
_KEYS_LOCK = threading.Lock()


def _text_memo_key(kind: str, value: Any, options: dict, fingerprint: str) -> tuple | None:
    if not isinstance(value, str):
        return None
    try:
        digest = hashlib.sha256(value.encode("utf-8", errors="surrogatepass")).hexdigest()
        return (kind, digest, json.dumps(options, sort_keys=True), fingerprint)
    except TypeError:
        return None  # odd options: the slow path reports them


def _index_max_states(limits: CompileLimits) -> int:
    return min(limits.max_states, MAX_STATES_LIMIT)


@dataclass(frozen=True)
class CompileJob:
    """One compile as a worker process receives it (structgen.fsm.compile_pool): everything here pickles."""

    kind: str
    value: Any
    options: dict
    limits: CompileLimits
    key: str


def _build_compiled(kind: str, key: str, build_automaton, tokenizer, limits: CompileLimits,
                    deadline: float | None = None) -> CompiledConstraint:
    """Build the automaton and the initial state's mask in this process, by `deadline` at the latest."""
    timeout = limits.compile_timeout_s
    stop = time.monotonic() + timeout
    if deadline is not None and deadline < stop:
        stop, timeout = deadline, max(deadline - time.monotonic(), 0.0)
    vocab = Vocabulary.from_tokenizer(tokenizer)
    automaton = build_automaton(limits)
    if time.monotonic() > stop:
        raise ConstraintTooComplexError("compile time (s)", timeout, "STRUCTGEN_COMPILE_TIMEOUT_S")
    index = TokenIndex(automaton, vocab, **_index_limits(limits))
    index.build_initial(stop)
    return CompiledConstraint(kind, key, index, tokenizer)


def build_snapshot(job: CompileJob, tokenizer) -> dict:
    """Compile `job` here and return what `restore` takes back: a compile worker's whole task."""
    _, _, build_automaton = _automaton_builder(job.kind, job.value, job.options)
    return _build_compiled(job.kind, job.key, build_automaton, tokenizer, job.limits).snapshot()


def _index_limits(limits: CompileLimits) -> dict:
    # NOTE: the index's own time limit is per state built later, in the decoding loop (expand_timeout_s); the
    # compile's build_initial is given the compile's deadline explicitly.
    return dict(max_states=_index_max_states(limits), timeout_s=limits.expand_timeout_s,
                max_table_bytes=limits.max_table_bytes)


def lookup_compiled(kind: str, value: Any, tokenizer=None, *, limits: CompileLimits | None = None,
                    deadline: float | None = None, **options) -> CompiledConstraint | None:
    """The compiled constraint if this exact constraint text is in memory, else None; raises its remembered failure.

    Costs a hash of the text, no parsing: a server gets the schema as JSON text with every request, and a repeat
    must skip parsing and canonicalizing a large schema (and never wait in a compile queue). Values that are not
    text always answer None.
    """
    tokenizer = _resolve_tokenizer(tokenizer)
    text_memo = _text_memo_key(kind, value, options, tokenizer.fingerprint)
    return _lookup_memo(text_memo, limits if limits is not None else CompileLimits.from_env(), deadline)


def _lookup_memo(text_memo: tuple | None, limits: CompileLimits, deadline: float | None):
    key = _KEYS_BY_TEXT.get(text_memo) if text_memo is not None else None
    return default_cache().lookup_memory(key, limits, deadline) if key is not None else None


def compile_with_status(kind: str, value: Any, tokenizer=None, *, limits: CompileLimits | None = None,
                        deadline: float | None = None, builder: Callable[[CompileJob], dict] | None = None,
                        **options) -> tuple[CompiledConstraint, str]:
    """Like compile_constraint, plus where the result came from: "memory", "disk" or "miss".

    deadline: time.monotonic() by which this caller gives up (a request's deadline; None = only the limits).
    builder: runs a CompileJob elsewhere and returns its snapshot (a worker process: structgen.fsm.compile_pool);
    None = compile in this thread.
    """
    tokenizer = _resolve_tokenizer(tokenizer)
    if limits is None:
        limits = CompileLimits.from_env()
    # NOTE: the text's digest once: it is the memo's key for the lookup and, on a miss, for the entry made below.
    text_memo = _text_memo_key(kind, value, options, tokenizer.fingerprint)
    hit = _lookup_memo(text_memo, limits, deadline)
    if hit is not None:
        return hit, MEMORY
    canonical, keyed_options, build_automaton = _automaton_builder(kind, value, options)
    key = make_key(kind, canonical, keyed_options, tokenizer.fingerprint)
    if text_memo is not None:
        with _KEYS_LOCK:
            _KEYS_BY_TEXT[text_memo] = key
            while len(_KEYS_BY_TEXT) > _KEYS_MEMO_SIZE:
                _KEYS_BY_TEXT.pop(next(iter(_KEYS_BY_TEXT)))

    def restore(payload: dict) -> CompiledConstraint:
        if payload.get("kind") != kind:
            raise ValueError("cached entry is of another kind")
        index = TokenIndex.restore(payload["index"], Vocabulary.from_tokenizer(tokenizer), **_index_limits(limits))
        return CompiledConstraint(kind, key, index, tokenizer)

    def build() -> CompiledConstraint:
        if builder is None:
            return _build_compiled(kind, key, build_automaton, tokenizer, limits, deadline)
        return restore(builder(CompileJob(kind, value, dict(options), limits, key)))

    return default_cache().get_or_compile(key, build, restore, limits, deadline)


def compile_constraint(kind: str, value: Any, tokenizer=None, *, limits: CompileLimits | None = None,
                       **options) -> CompiledConstraint:
    """Compile (or fetch from the cache) a constraint: kind "json_schema" | "regex" | "choice" | "grammar".

    limits: the state and time limits of this compile (None = CompileLimits.from_env()).
    options: the kind's own, as keywords (json_schema: extra_properties, ...; grammar: syntax, start).
    Raises ConstraintError subclasses for bad constraints (InvalidSchemaError, UnsupportedSchemaError,
    InvalidRegexError, InvalidGrammarError, UnsupportedGrammarError, ConstraintTooComplexError), TypeError/ValueError
    for API misuse.
    """
    return compile_with_status(kind, value, tokenizer, limits=limits, **options)[0]


def compile_json_schema(schema: dict | bool | str, tokenizer=None, *, extra_properties: bool = False,
                        limits: CompileLimits | None = None, **options) -> CompiledConstraint:
    """A JSON Schema (dict, bool, or JSON text) -> CompiledConstraint. None = the default model's tokenizer.

    extra_properties=False (default): objects admit only declared keys unless the schema says otherwise.
    Other options (whitespace, max_recursion_depth, ...) go to the schema compiler.
    """
    return compile_constraint("json_schema", schema, tokenizer, limits=limits, extra_properties=extra_properties,
                              **options)


def compile_regex(pattern: str, tokenizer=None, *, limits: CompileLimits | None = None) -> CompiledConstraint:
    """A regex (full match; the ECMA-262 dialect structgen.fsm.regex documents) -> CompiledConstraint."""
    return compile_constraint("regex", pattern, tokenizer, limits=limits)


def compile_choice(choices: Sequence[str], tokenizer=None, *,
                   limits: CompileLimits | None = None) -> CompiledConstraint:
    """Exactly one of `choices` -> CompiledConstraint."""
    return compile_constraint("choice", list(choices) if isinstance(choices, tuple) else choices, tokenizer,
                              limits=limits)


def compile_grammar(grammar: str, tokenizer=None, *, syntax: str | None = None, start: str | None = None,
                    limits: CompileLimits | None = None) -> CompiledConstraint:
    """A grammar (full match; structgen.fsm.grammar: EBNF or Lark, regular languages only) -> CompiledConstraint.

    syntax: "ebnf" | "lark" (None: detected from the text). start: the start rule (None: "root" / "start").
    """
    return compile_constraint("grammar", grammar, tokenizer, limits=limits, syntax=syntax, start=start)
