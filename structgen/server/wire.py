"""The one place protobuf meets the engine's dataclasses: requests in, outputs out, errors as statuses.

Nothing else in structgen knows protobuf; nothing here knows asyncio or gRPC servers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import grpc

from .._proto import structgen_pb2 as pb
from ..errors import (CompileCancelledError, CompileCrashedError, CompileDeadlineError, CompileQueueFullError,
                      ConstraintError, InvalidRegexError, InvalidSchemaError, UnsupportedSchemaError)

CHAT_ROLES = ("system", "user", "assistant")


class RequestError(Exception):
    """A request the server refuses: becomes the gRPC status `code` with `message` (and trailing metadata)."""

    param: str | None = None  # the request field at fault, where an API reports it (OpenAI's error.param)

    def __init__(self, code: grpc.StatusCode, message: str, metadata: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.code = code
        self.message = message
        self.metadata = metadata


# Trailing metadata that tells a client an INVALID_ARGUMENT is about the constraint (not other parameters).
CONSTRAINT_KIND = ("structgen-error-kind", "constraint")


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def invalid_constraint(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message, (CONSTRAINT_KIND,))


@dataclass(frozen=True)
class ConstraintRef:
    """What a request's `constraint` field asks for: a spec to compile, a compiled id, or nothing."""

    spec: object | None = None  # engine ConstraintSpec
    compiled_id: str | None = None


def constraint_from_pb(c: pb.Constraint, *, allow_compiled_id: bool = True) -> ConstraintRef:
    from ..engine.requests import ConstraintSpec

    kind = c.WhichOneof("kind")
    if kind is None:
        return ConstraintRef()
    if kind == "compiled_id":
        if not allow_compiled_id:
            raise invalid_constraint("constraint.compiled_id cannot be compiled again; send the json_schema, regex "
                                     "or choice")
        if not c.compiled_id:
            raise invalid_constraint("constraint.compiled_id is empty")
        return ConstraintRef(compiled_id=c.compiled_id)
    if kind == "json_schema":
        try:
            schema = json.loads(c.json_schema)
        except json.JSONDecodeError as e:
            raise invalid_constraint(f"constraint.json_schema is not valid JSON: {e.msg} at line {e.lineno} column "
                          f"{e.colno}") from None
        except RecursionError:
            from ..fsm.json_schema.normalize import MAX_SCHEMA_NESTING

            raise invalid_constraint(f"constraint.json_schema nests too deep to read (a schema may nest at most "
                                     f"{MAX_SCHEMA_NESTING} objects/arrays)") from None
        if not isinstance(schema, (dict, bool)):
            raise invalid_constraint(f"constraint.json_schema must be a JSON object (or true/false), got "
                          f"{type(schema).__name__}")
        options: dict = {"extra_properties": c.json_schema_options.allow_extra_properties}
        order = c.json_schema_options.property_order
        if order:
            if order not in ("schema", "any"):
                raise invalid_constraint(f"constraint.json_schema_options.property_order must be 'schema' or 'any', "
                                         f"not {order[:40]!r}")
            if order == "any":  # "schema" is the default: left out, so both spellings share one cache entry
                options["property_order"] = "any"
        if c.json_schema_options.HasField("max_recursion_depth"):
            options["max_recursion_depth"] = c.json_schema_options.max_recursion_depth
        # NOTE: the text, not the parsed value, goes on: a repeat of it is found in the compile cache by a hash of
        # the text, without parsing and canonicalizing the schema again or waiting in the compile queue.
        return ConstraintRef(spec=ConstraintSpec(kind="json_schema", value=c.json_schema, options=options))
    if kind == "regex":
        if not c.regex:
            raise invalid_constraint("constraint.regex is empty")
        return ConstraintRef(spec=ConstraintSpec(kind="regex", value=c.regex))
    choices = list(c.choice.choices)
    if not choices:
        raise invalid_constraint("constraint.choice.choices is empty: give at least one choice")
    if any(not s for s in choices):
        raise invalid_constraint(f"constraint.choice.choices[{choices.index('')}] is an empty string")
    return ConstraintRef(spec=ConstraintSpec(kind="choice", value=choices))


def constraint_error(err: ConstraintError) -> RequestError:
    """A compile error as INVALID_ARGUMENT (DEADLINE_EXCEEDED when the request's deadline stopped it, INTERNAL when
    the compiler itself failed); the keyword / pointer / position also go in trailing metadata."""
    md: list[tuple[str, str]] = [CONSTRAINT_KIND]
    if isinstance(err, CompileDeadlineError):
        return RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, str(err), tuple(md))
    if isinstance(err, CompileCrashedError):
        return RequestError(grpc.StatusCode.INTERNAL, str(err), tuple(md))
    if isinstance(err, UnsupportedSchemaError):
        md += [("structgen-error-keyword", err.keyword), ("structgen-error-pointer", err.pointer or "#")]
    elif isinstance(err, InvalidSchemaError):
        md.append(("structgen-error-pointer", err.pointer or "#"))
    elif isinstance(err, InvalidRegexError) and err.position is not None:
        md.append(("structgen-error-position", str(err.position)))
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(err), tuple(md))


def compile_refusal(err: CompileQueueFullError | CompileCancelledError) -> RequestError:
    """A compile the pool would not run: its queue is full (RESOURCE_EXHAUSTED, retry later) or it is shutting down."""
    if isinstance(err, CompileQueueFullError):
        return RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err), (("retry-after-s", "1"),))
    return RequestError(grpc.StatusCode.UNAVAILABLE, str(err))


def prompt_text(req: pb.GenerateRequest, tokenizer) -> str:
    """The text the model reads: the raw prompt, or the messages through the model's chat template."""
    if req.prompt and req.messages:
        raise invalid("set either prompt or messages, not both")
    if req.messages:
        messages = []
        if req.system:
            messages.append({"role": "system", "content": req.system})
        for i, m in enumerate(req.messages):
            if m.role not in CHAT_ROLES:
                raise invalid(f"messages[{i}].role is {m.role!r}; expected one of {', '.join(CHAT_ROLES)}")
            messages.append({"role": m.role, "content": m.content})
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    if not req.prompt:
        raise invalid("the request has no prompt: set prompt or messages")
    return f"{req.system}\n\n{req.prompt}" if req.system else req.prompt


def sampling_from_pb(req: pb.GenerateRequest, *, prompt_len: int, max_model_len: int, default_max_tokens: int,
                     max_tokens_limit: int, vocab_size: int | None = None):
    """Engine SamplingParams from the request, checking every number against the server's limits.

    `vocab_size` bounds `sampling.logit_bias`'s token ids (None: not checked). Every refusal names the field.
    """
    from ..engine.requests import SamplingParams

    from .limits import resolve_max_tokens

    max_tokens = resolve_max_tokens(req.max_tokens if req.HasField("max_tokens") else None, prompt_len=prompt_len,
                                    max_model_len=max_model_len, default_max_tokens=default_max_tokens,
                                    max_tokens_limit=max_tokens_limit)
    s = req.sampling
    if not math.isfinite(s.temperature) or s.temperature < 0:
        raise invalid(f"sampling.temperature must be >= 0, got {s.temperature}")
    if not math.isfinite(s.top_p) or not 0 <= s.top_p <= 1:
        raise invalid(f"sampling.top_p must be in (0, 1] (0 = unset), got {s.top_p}")
    for i, stop in enumerate(req.stop):
        if not stop:
            raise invalid(f"stop[{i}] is an empty string")
    for token in s.logit_bias:
        if vocab_size is not None and token >= vocab_size:
            raise invalid(f"sampling.logit_bias: token id {token} is outside the vocabulary (ids 0..{vocab_size - 1})")
    # Unset proto3 optionals keep the dataclass's neutral defaults; the ranges are SamplingParams' to check (its
    # messages start with the field's name).
    optional = {name: getattr(s, name) for name in ("seed", "repetition_penalty", "dry_base", "dry_allowed_length")
                if s.HasField(name)}
    try:
        return SamplingParams(
            temperature=float(s.temperature), top_p=float(s.top_p) or 1.0, top_k=int(s.top_k),
            max_tokens=int(max_tokens), stop=tuple(req.stop),
            frequency_penalty=s.frequency_penalty, presence_penalty=s.presence_penalty, min_p=s.min_p,
            logit_bias=tuple(sorted(s.logit_bias.items())), dry_multiplier=s.dry_multiplier, dry_range=s.dry_range,
            logprobs=s.logprobs, top_logprobs=s.top_logprobs, n=s.n or 1, **optional,
        )
    except ValueError as e:
        raise invalid(f"sampling.{e}") from None


_FINISH = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH, "budget": pb.FINISH_REASON_BUDGET}


def finish_reason_pb(reason: str | None) -> int:
    return _FINISH.get(reason or "", pb.FINISH_REASON_UNSPECIFIED)


def budget_error(message: str) -> RequestError:
    """INVALID_ARGUMENT for a constraint whose shortest completion does not fit the budget
    (the message is structgen.fsm.budget.budget_refusal's)."""
    return invalid(message)


def _text(text: str) -> str:
    # A token's text may hold a lone surrogate (half a character decoded alone); protobuf strings must be UTF-8.
    return text.encode("utf-8", "replace").decode("utf-8")


def logprobs_pb(logprobs) -> list[pb.TokenLogprob]:
    """Engine TokenLogprobs (token_id, text, logprob, top: ((id, text, logprob), ...)) as protobuf; None -> []."""
    return [pb.TokenLogprob(token_id=lp.token_id, text=_text(lp.text), logprob=lp.logprob,
                            top=[pb.TopLogprob(token_id=t, text=_text(x), logprob=v) for t, x, v in lp.top])
            for lp in logprobs or ()]


def usage_pb(usage) -> pb.Usage:
    return pb.Usage(prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens,
                    completion_tokens=usage.completion_tokens, forced_tokens=getattr(usage, "forced_tokens", 0))


def timings_pb(timings) -> pb.Timings:
    return pb.Timings(queued_s=timings.queued_s or 0.0, ttft_s=timings.ttft_s or 0.0,
                      total_s=timings.total_s or 0.0)
