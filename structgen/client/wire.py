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
from .extraction import DEFAULT_EXTRACT_MAX_TOKENS, ExtractionTask

_FINISH = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length"}

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
class Completion:
    """A whole generation."""

    request_id: str
    text: str
    finish_reason: str | None  # "stop" | "length"
    usage: Usage
    timings: Timings


@dataclass(frozen=True)
class Delta:
    """One streamed piece; `finish_reason`, `usage` and `timings` are set on the last one only."""

    request_id: str
    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    timings: Timings | None = None


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
               allow_extra_properties=False) -> pb.Constraint | None:
    given = [n for n, v in (("json_schema", json_schema), ("regex", regex), ("choices", choices),
                            ("compiled_id", compiled_id)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one constraint, got {', '.join(given)}")
    if json_schema is not None:
        text = json_schema if isinstance(json_schema, str) else json.dumps(json_schema)
        return pb.Constraint(json_schema=text, json_schema_options=pb.JsonSchemaOptions(
            allow_extra_properties=allow_extra_properties))
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
                  max_tokens: int | None = None, temperature: float = 0.0, top_p: float | None = None,
                  top_k: int | None = None, seed: int | None = None, stop: Iterable[str] = (),
                  request_id: str | None = None, speculation: bool | None = None) -> pb.GenerateRequest:
    """The GenerateRequest for these arguments (what `generate` and `stream` send)."""
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of prompt (raw text) or messages (chat turns)")
    if isinstance(stop, str):
        stop = [stop]
    req = pb.GenerateRequest(
        prompt=prompt or "", system=system or "", stop=list(stop), request_id=request_id or "",
        sampling=pb.SamplingParams(temperature=temperature, top_p=top_p or 0.0, top_k=top_k or 0),
    )
    for m in messages or ():
        req.messages.add(role=m["role"], content=m["content"])
    if seed is not None:
        req.sampling.seed = seed
    if max_tokens is not None:
        req.max_tokens = max_tokens
    if speculation is not None:
        req.speculation = speculation
    c = constraint(json_schema, regex, choices, compiled_id, allow_extra_properties)
    if c is not None:
        req.constraint.CopyFrom(c)
    return req


def _usage(u: pb.Usage) -> Usage:
    return Usage(u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.forced_tokens)


def _timings(t: pb.Timings) -> Timings:
    return Timings(t.queued_s, t.ttft_s, t.total_s)


def completion(r: pb.GenerateResponse) -> Completion:
    return Completion(r.request_id, r.text, _FINISH.get(r.finish_reason), _usage(r.usage), _timings(r.timings))


def delta(r: pb.GenerateStreamResponse) -> Delta:
    if r.finish_reason == pb.FINISH_REASON_UNSPECIFIED:
        return Delta(r.request_id, r.text)
    return Delta(r.request_id, r.text, _FINISH.get(r.finish_reason), _usage(r.usage), _timings(r.timings))


# ------------------------------------------------------------------------------------------ the calls
def generate_call(prompt: str | None = None, **kwargs) -> Call:
    return Call(GENERATE, build_request(prompt, **kwargs), completion)


def compile_call(json_schema=None, regex=None, choices=None, allow_extra_properties=False) -> Call:
    c = constraint(json_schema, regex, choices, None, allow_extra_properties)
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


def extract_call(task: ExtractionTask, text: str, max_tokens: int | None) -> Call:
    """One document through `task`: its chat prompt under the task's schema; the response parsed and validated
    (raises ExtractionError when the output is not a usable value)."""
    request = build_request(messages=task.messages(text), json_schema=task.schema,
                            max_tokens=max_tokens or DEFAULT_EXTRACT_MAX_TOKENS)

    def parse(r: pb.GenerateResponse):
        done = completion(r)
        return task.parse(done.text, done.finish_reason)

    return Call(GENERATE, request, parse)
