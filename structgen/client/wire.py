"""The SDK's side of the wire: call arguments -> protobuf requests, responses -> SDK values, written once.

Both transports (`sync.Client` over a grpc channel, `aio.AsyncClient` over a grpc.aio one) describe every unary
RPC as a `Call` built here and only differ in how they wait for it, so a method's meaning lives in one place.
Nothing else in the SDK knows protobuf.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import grpc

from .._proto import structgen_pb2 as pb
from .errors import from_rpc_error
from .extraction import DEFAULT_EXTRACT_MAX_TOKENS, EXTRACT_SAMPLING_DEFAULTS, Extracted, ExtractionTask

_FINISH = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length", pb.FINISH_REASON_BUDGET: "budget"}

# The sampling keyword arguments of generate / stream / extract, named as the engine's SamplingParams names them.
# extract takes all but `logprobs`, `top_logprobs` and `n` (one value per document, nothing to put them on).
EXTRACT_SAMPLING = ("temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty",
                    "repetition_penalty", "min_p", "logit_bias", "dry_multiplier", "dry_base", "dry_allowed_length",
                    "dry_range")

GENERATE = "StructGen/Generate"
GENERATE_STREAM = "StructGen/GenerateStream"
COMPILE = "StructGen/Compile"
SERVER_INFO = "StructGen/GetServerInfo"
HEALTH_CHECK = "Health/Check"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    forced_tokens: int


@dataclass(frozen=True)
class Timings:
    queued_s: float
    ttft_s: float
    total_s: float


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its id, text, log-probability (<= 0) and the `top_logprobs` most likely tokens at its
    position as (token_id, text, logprob), most likely first."""

    token_id: int
    text: str
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()


@dataclass(frozen=True)
class Choice:
    """One of the `n` completions of a request."""

    index: int
    text: str
    finish_reason: str | None  # "stop" | "budget" | "length"
    usage: Usage
    timings: Timings
    logprobs: tuple[TokenLogprob, ...] | None = None  # with logprobs=True: one per generated token


@dataclass(frozen=True)
class Completion:
    """A whole generation. The fields are choice 0's; `choices` holds all `n` of them (one when n is 1).

    finish_reason: "stop" (the output ended on its own), "budget" (the token budget closed a constrained output:
    it is complete and valid, but the model was cut short), "length" (max_tokens, unconstrained requests only).
    """

    request_id: str
    text: str
    finish_reason: str | None
    usage: Usage
    timings: Timings
    logprobs: tuple[TokenLogprob, ...] | None = None
    choices: tuple[Choice, ...] = ()


@dataclass(frozen=True)
class Delta:
    """One streamed piece of choice `index`; `finish_reason`, `usage` and `timings` are set on the last piece of
    each choice only. `logprobs`: with logprobs=True, one per token of the piece."""

    request_id: str
    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    index: int = 0
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class Compiled:
    """A constraint compiled on the server: pass `id` as `compiled_id=` in later calls."""

    id: str
    num_states: int
    compile_time_s: float
    cached: bool


@dataclass(frozen=True)
class Call:
    """One unary RPC: which method (`SERVICE/Method`), the request, how to read the response.

    `answers` maps statuses that are an answer rather than a failure to the value they mean (a health check
    that cannot reach the server means "not serving").
    """

    rpc: str
    request: Any
    parse: Callable[[Any], Any]
    answers: Mapping[grpc.StatusCode, Any] = field(default_factory=dict)

    def failed(self, err: grpc.RpcError):
        """The value of a failed call, or raises its typed error (structgen.client.errors)."""
        if err.code() in self.answers:
            return self.answers[err.code()]
        raise from_rpc_error(err) from None


def stubs(channel, service: str):
    """The generated stub of `service` ("StructGen" | "Health") on a grpc or grpc.aio channel."""
    if service == "StructGen":
        from .._proto import structgen_pb2_grpc as pb_grpc

        return pb_grpc.StructGenStub(channel)
    if service == "Health":
        from grpc_health.v1 import health_pb2_grpc

        return health_pb2_grpc.HealthStub(channel)
    raise ValueError(f"unknown service {service!r}")


def channel_options(max_message_bytes: int) -> list:
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)]


def auth_metadata(api_key: str | None) -> tuple:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def constraint(json_schema=None, regex=None, choices=None, compiled_id=None,
               allow_extra_properties=False, property_order: str | None = None) -> pb.Constraint | None:
    given = [n for n, v in (("json_schema", json_schema), ("regex", regex), ("choices", choices),
                            ("compiled_id", compiled_id)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one constraint, got {', '.join(given)}")
    if json_schema is not None:
        text = json_schema if isinstance(json_schema, str) else json.dumps(json_schema)
        return pb.Constraint(json_schema=text, json_schema_options=pb.JsonSchemaOptions(
            allow_extra_properties=allow_extra_properties, property_order=property_order or ""))
    if regex is not None:
        return pb.Constraint(regex=regex)
    if choices is not None:
        if isinstance(choices, str):
            raise TypeError("choices must be a list of strings, not one string")
        return pb.Constraint(choice=pb.ChoiceList(choices=list(choices)))
    if compiled_id is not None:
        return pb.Constraint(compiled_id=compiled_id)
    return None


def build_request(prompt: str | None = None, *, messages: list[dict] | None = None, system: str | None = None,
                  json_schema: dict | str | None = None, regex: str | None = None, choices: list[str] | None = None,
                  compiled_id: str | None = None, allow_extra_properties: bool = False,
                  property_order: str | None = None, max_tokens: int | None = None, temperature: float = 0.0,
                  top_p: float | None = None,
                  top_k: int | None = None, seed: int | None = None, stop: Iterable[str] = (),
                  request_id: str | None = None, speculation: bool | None = None,
                  frequency_penalty: float | None = None, presence_penalty: float | None = None,
                  repetition_penalty: float | None = None, min_p: float | None = None,
                  logit_bias: Mapping[int, float] | None = None, dry_multiplier: float | None = None,
                  dry_base: float | None = None, dry_allowed_length: int | None = None, dry_range: int | None = None,
                  logprobs: bool = False, top_logprobs: int | None = None, n: int | None = None) -> pb.GenerateRequest:
    """The GenerateRequest for these arguments (what `generate` and `stream` send). None leaves a parameter to
    the server's neutral default; the server checks every value (INVALID_ARGUMENT naming the field).

    Sampling, as the engine's SamplingParams: frequency_penalty / presence_penalty (OpenAI, over the output),
    repetition_penalty (HF/vLLM, over prompt + output; 1 = off), min_p, logit_bias ({token_id: bias}),
    dry_multiplier / dry_base / dry_allowed_length / dry_range (a repetition guard that never penalizes copying
    the prompt), logprobs / top_logprobs (log-probabilities of the generated tokens), n (completions, 1..16).
    """
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of prompt (raw text) or messages (chat turns)")
    if isinstance(stop, str):
        stop = [stop]
    sampling = pb.SamplingParams(temperature=temperature, top_p=top_p or 0.0, top_k=top_k or 0,
                                 frequency_penalty=frequency_penalty or 0.0, presence_penalty=presence_penalty or 0.0,
                                 min_p=min_p or 0.0, dry_multiplier=dry_multiplier or 0.0, dry_range=dry_range or 0,
                                 logprobs=logprobs, top_logprobs=top_logprobs or 0, n=n or 0)
    for name, value in (("seed", seed), ("repetition_penalty", repetition_penalty), ("dry_base", dry_base),
                        ("dry_allowed_length", dry_allowed_length)):
        if value is not None:  # proto3 optional: unset differs from 0
            setattr(sampling, name, value)
    if logit_bias is not None:
        if not isinstance(logit_bias, Mapping):
            raise TypeError(f"logit_bias must be a mapping of token id -> bias, got {type(logit_bias).__name__}")
        for token, bias in logit_bias.items():
            sampling.logit_bias[int(token)] = float(bias)
    req = pb.GenerateRequest(prompt=prompt or "", system=system or "", stop=list(stop), request_id=request_id or "",
                             sampling=sampling)
    for m in messages or ():
        req.messages.add(role=m["role"], content=m["content"])
    if max_tokens is not None:
        req.max_tokens = max_tokens
    if speculation is not None:
        req.speculation = speculation
    c = constraint(json_schema, regex, choices, compiled_id, allow_extra_properties, property_order)
    if c is not None:
        req.constraint.CopyFrom(c)
    return req


def _usage(u: pb.Usage) -> Usage:
    return Usage(u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.forced_tokens)


def _timings(t: pb.Timings) -> Timings:
    return Timings(t.queued_s, t.ttft_s, t.total_s)


def _logprobs(items, asked: bool) -> tuple[TokenLogprob, ...] | None:
    if not asked:
        return None
    return tuple(TokenLogprob(lp.token_id, lp.text, lp.logprob, tuple((t.token_id, t.text, t.logprob) for t in lp.top))
                 for lp in items)


def completion(r: pb.GenerateResponse, logprobs: bool = False) -> Completion:
    """`logprobs`: whether the request asked for them (None on the result otherwise; an empty tuple is none)."""
    if r.choices:
        choices = tuple(Choice(c.index, c.text, _FINISH.get(c.finish_reason), _usage(c.usage), _timings(c.timings),
                               _logprobs(c.logprobs, logprobs)) for c in r.choices)
    else:  # n = 1 (or a server that predates n): the single fields are the one choice
        choices = (Choice(0, r.text, _FINISH.get(r.finish_reason), _usage(r.usage), _timings(r.timings),
                          _logprobs(r.logprobs, logprobs)),)
    first = choices[0]
    return Completion(r.request_id, first.text, first.finish_reason, first.usage, first.timings, first.logprobs,
                      choices)


def delta(r: pb.GenerateStreamResponse, logprobs: bool = False) -> Delta:
    lps = _logprobs(r.logprobs, logprobs)
    if r.finish_reason == pb.FINISH_REASON_UNSPECIFIED:
        return Delta(r.request_id, r.text, index=r.index, logprobs=lps)
    return Delta(r.request_id, r.text, _FINISH.get(r.finish_reason), _usage(r.usage), _timings(r.timings), r.index,
                 lps)


def affinity_key(request) -> bytes | None:
    """What a request shares with others that a replica's caches reuse: the system text (the prompt's shared
    prefix: the chat template renders it first) and the constraint (the compile cache's key). None when it has
    neither, so the balancer spreads it. A Compile request's key is its constraint."""
    if isinstance(request, pb.GenerateRequest):
        parts = [request.system]
        for m in request.messages:  # leading system turns only: past the first other turn the prefixes differ
            if m.role != "system":
                break
            parts.append(m.content)
        key = "\0".join(parts).encode()
        if request.HasField("constraint"):
            key += b"\0" + request.constraint.SerializeToString(deterministic=True)
        return key if key.strip(b"\0") else None
    if isinstance(request, pb.CompileRequest):
        return request.constraint.SerializeToString(deterministic=True)
    return None


# ------------------------------------------------------------------------------------------ the calls
def generate_call(prompt: str | None = None, **kwargs) -> Call:
    request = build_request(prompt, **kwargs)
    asked = request.sampling.logprobs
    return Call(GENERATE, request, lambda r: completion(r, asked))


def compile_call(json_schema=None, regex=None, choices=None, allow_extra_properties=False,
                 property_order: str | None = None) -> Call:
    c = constraint(json_schema, regex, choices, None, allow_extra_properties, property_order)
    if c is None:
        raise ValueError("give one of json_schema, regex or choices")
    return Call(COMPILE, pb.CompileRequest(constraint=c),
                lambda r: Compiled(r.id, r.num_states, r.compile_time_s, r.cached))


def server_info_call() -> Call:
    return Call(SERVER_INFO, pb.GetServerInfoRequest(), lambda r: r)


def health_call(service: str = "") -> Call:
    """The standard grpc.health.v1 check: True if SERVING; False if not, or if the server cannot say."""
    from grpc_health.v1 import health_pb2

    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = {code: False for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND,
                                            grpc.StatusCode.DEADLINE_EXCEEDED)}
    return Call(HEALTH_CHECK, health_pb2.HealthCheckRequest(service=service), lambda r: r.status == serving,
                not_serving)


def extract_call(task: ExtractionTask, text: str, max_tokens: int | None = None, **sampling) -> Call:
    """One document through `task`: its chat prompt under the task's schema, with `sampling` (names of
    EXTRACT_SAMPLING); the response parsed and validated into an `Extracted` (raises ExtractionError when the
    output is not a usable value). A value the token budget closed is returned, flagged `closed_by_budget`."""
    unknown = sorted(set(sampling) - set(EXTRACT_SAMPLING))
    if unknown:
        raise TypeError(f"extract does not take {', '.join(unknown)}; it takes {', '.join(EXTRACT_SAMPLING)}")
    sampling = {**EXTRACT_SAMPLING_DEFAULTS, **sampling}
    request = build_request(messages=task.messages(text), json_schema=task.schema,
                            max_tokens=max_tokens or DEFAULT_EXTRACT_MAX_TOKENS, **sampling)

    def parse(r: pb.GenerateResponse) -> Extracted:
        done = completion(r)
        return Extracted(task.parse(done.text, done.finish_reason), closed_by_budget=done.finish_reason == "budget")

    return Call(GENERATE, request, parse)
