"""The OpenAI-compatible API: POST /v1/chat/completions, POST /v1/completions, GET /v1/models.

Responses follow OpenAI's shapes (what the `openai` SDK parses): `usage` always, logprobs in the chat or the legacy
shape, server-sent events `data: {chunk}` ... `data: [DONE]` when `stream` is true, with a last usage-only chunk
under `stream_options.include_usage`. A constrained output the token budget closed early is complete and valid:
its finish_reason is "stop" (OpenAI's "length" means cut off, and SDKs treat it as a failed parse).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
import uuid
from types import SimpleNamespace

from starlette.requests import Request

from ...engine.outputs import Usage
from ...engine.requests import ConstraintSpec
from ..generation import CallRecord
from ..wire import RequestError, invalid
from .body import Body
from .calls import Call, authorize, client_of, event_stream, read_json, unless_disconnected
from .chat import template_messages
from .constraints import openai_constraint
from .sampling import openai_sampling
from .errors import openai_error
from .tools import Phase, ToolCallPlan, ToolChoice, parse_tool_choice, parse_tools, with_tools_rendered

def finish_reason(engine_reason: str | None) -> str | None:
    return {"budget": "stop"}.get(engine_reason, engine_reason)


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


# JSON has no -inf: a token with probability 0 (masked out by the constraint) is shown as OpenAI shows it.
ZERO_PROBABILITY_LOGPROB = -9999.0


def finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else ZERO_PROBABILITY_LOGPROB


def possible(top) -> list:
    """The top alternatives that have a probability (the constraint's masked tokens are no alternative)."""
    return [(t, x, v) for t, x, v in top if math.isfinite(v)]


def _chat_logprobs(logprobs) -> dict | None:
    if logprobs is None:
        return None

    def entry(text, lp):
        return {"token": text, "logprob": finite(lp), "bytes": list(text.encode("utf-8", "replace"))}

    return {"content": [{**entry(lp.text, lp.logprob), "top_logprobs": [entry(x, v) for _, x, v in possible(lp.top)]}
                        for lp in logprobs]}


def _legacy_logprobs(logprobs, offset0: int = 0) -> dict | None:
    if logprobs is None:
        return None
    offsets, pos = [], offset0
    for lp in logprobs:
        offsets.append(pos)
        pos += len(lp.text)
    return {"tokens": [lp.text for lp in logprobs], "token_logprobs": [finite(lp.logprob) for lp in logprobs],
            "top_logprobs": [{x: v for _, x, v in possible(lp.top)} for lp in logprobs], "text_offset": offsets}


@dataclasses.dataclass
class _Choice:
    parts: list = dataclasses.field(default_factory=list)
    logprobs: list | None = None
    final: object | None = None

    def add(self, out, want_logprobs: bool):
        self.parts.append(out.text)
        if want_logprobs:
            self.logprobs = (self.logprobs or []) + list(out.logprobs or ())
        if out.finished:
            self.final = out

    @property
    def text(self) -> str:
        return "".join(self.parts)


class OpenAIApi:
    def __init__(self, core, model_name: str):
        self.core = core
        self.model_name = model_name

    # ---- GET /v1/models ---------------------------------------------------------------------------------

    async def models(self, request: Request):
        authorize(request, self.core.config.api_keys)
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": 0,
                                            "owned_by": "structgen",
                                            "max_model_len": int(self.core.engine.max_model_len)}]}

    # ---- POST /v1/chat/completions ---------------------------------------------------------------------

    async def chat_completions(self, request: Request):
        authorize(request, self.core.config.api_keys)
        body = Body(await read_json(request, self.core.config.max_request_bytes))
        tok = self.core.engine.tokenizer
        messages = template_messages(body)
        tools = parse_tools(body)
        choice = parse_tool_choice(body, tools)
        requested = openai_constraint(body)
        use_tools = bool(tools) and choice.mode != "none"
        if use_tools and requested is not None:
            raise invalid(f"{requested.field} cannot be combined with tools (tool_choice {choice.mode!r}): the "
                          f"arguments of a call follow its function's parameters; set tool_choice 'none' to "
                          f"constrain a text answer")
        rendered = with_tools_rendered(messages, tools if use_tools else [], tok.template_knows_tools)
        prompt = tok.apply_chat_template(
            rendered, add_generation_prompt=True,
            tools=[t.definition() for t in tools] if use_tools and tok.template_knows_tools else None)
        prompt_ids = tok.encode(prompt)
        sampling = openai_sampling(body, prompt_len=len(prompt_ids), core=self.core, chat=True)
        stream, include_usage = self._stream_options(body)
        if use_tools:
            if sampling.n > 1:
                raise body.error("n", "must be 1 when the request has tools")
            if sampling.logprobs:
                raise body.error("logprobs", "is not supported together with tools")
            # A named tool_choice asks for a call of that function: one, as OpenAI, vLLM and SGLang answer it.
            parallel = bool(body.get("parallel_tool_calls", bool, True)) and choice.mode != "named"
            return await self._tool_answer(request, body, prompt, prompt_ids, sampling, tools, choice, parallel,
                                           stream, include_usage)
        return await self._generate(request, "chat.completion", prompt_ids, sampling, requested, stream,
                                    include_usage)

    # ---- POST /v1/completions --------------------------------------------------------------------------

    async def completions(self, request: Request):
        authorize(request, self.core.config.api_keys)
        body = Body(await read_json(request, self.core.config.max_request_bytes))
        tok = self.core.engine.tokenizer
        raw = body.data.get("prompt")
        if isinstance(raw, str) and raw:
            prompt_ids = tok.encode(raw)
        elif isinstance(raw, list) and raw and all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
            vocab = tok.vocab_size
            if any(not 0 <= t < vocab for t in raw):
                raise body.error("prompt", f"holds token ids outside the vocabulary (0..{vocab - 1})")
            prompt_ids = list(raw)
        elif isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str) and raw[0]:
            prompt_ids = tok.encode(raw[0])
        else:
            raise body.error("prompt", "must be a non-empty string, an array of one string, or an array of token "
                                       "ids (send one prompt per request)")
        if body.has("suffix"):
            raise body.error("suffix", "is not supported")
        if body.get("echo", bool, False):
            raise body.error("echo", "is not supported")
        sampling = openai_sampling(body, prompt_len=len(prompt_ids), core=self.core, chat=False)
        stream, include_usage = self._stream_options(body)
        return await self._generate(request, "text_completion", prompt_ids, sampling, openai_constraint(body),
                                    stream, include_usage)

    # ---- shared ----------------------------------------------------------------------------------------

    @staticmethod
    def _stream_options(body: Body) -> tuple[bool, bool]:
        stream = bool(body.get("stream", bool, False))
        opts = body.object("stream_options")
        include_usage = bool(opts.get("include_usage", bool, False)) if opts is not None else False
        if opts is not None and not stream:
            raise body.error("stream_options", "is only allowed when stream is true")
        return stream, include_usage

    def _envelope(self, kind: str) -> dict:
        prefix = "chatcmpl-" if kind.startswith("chat") else "cmpl-"
        return {"id": prefix + uuid.uuid4().hex, "object": kind, "created": int(time.time()),
                "model": self.model_name}

    async def _generate(self, request, kind, prompt_ids, sampling, requested, stream, include_usage):
        call = Call(self.core, "http:" + request.url.path, request)
        await call.__aenter__()
        try:
            constraint = await call.constraint(requested.spec if requested else None, max_tokens=sampling.max_tokens,
                                               room=self.core.engine.max_model_len - len(prompt_ids))
            reqs = call.engine_requests(prompt_ids, sampling, constraint)
        except BaseException as e:
            await call.__aexit__(type(e), e, None)
            raise self._with_field(e, requested)
        if stream:
            return self._stream(call, kind, reqs, sampling, include_usage, requested)
        try:
            choices: dict[int, _Choice] = {}

            async def collect(index, out):
                choices.setdefault(index, _Choice()).add(out, sampling.logprobs)

            await unless_disconnected(request, call.run(reqs, collect))
        except BaseException as e:
            await call.__aexit__(type(e), e, None)
            raise self._with_field(e, requested)
        await call.__aexit__(None, None, None)
        envelope = self._envelope(kind)
        out = []
        for i in sorted(choices):
            c = choices[i]
            reason = finish_reason(c.final.finish_reason)
            stop_reason = getattr(c.final, "stop_string", None)
            if kind == "chat.completion":
                out.append({"index": i, "message": {"role": "assistant", "content": c.text, "tool_calls": []},
                            "logprobs": _chat_logprobs(c.logprobs), "finish_reason": reason,
                            "stop_reason": stop_reason})
            else:
                out.append({"index": i, "text": c.text, "logprobs": _legacy_logprobs(c.logprobs),
                            "finish_reason": reason, "stop_reason": stop_reason})
        u = choices[0].final.usage
        completion = sum(c.final.usage.completion_tokens for c in choices.values())
        return {**envelope, "choices": out, "usage": _usage(u.prompt_tokens, completion, u.cached_tokens)}

    @staticmethod
    def _with_field(e: BaseException, requested) -> BaseException:
        """A constraint's error names the request field that held the constraint (for error.param)."""
        if requested is not None and hasattr(e, "metadata") and not getattr(e, "constraint_field", None):
            e.constraint_field = requested.field
        return e

    def _stream(self, call: Call, kind: str, reqs: list, sampling, include_usage: bool, requested):
        chat = kind.startswith("chat")
        envelope = self._envelope(kind + ".chunk" if chat else kind)

        def chunk(choices, usage=None) -> str:
            return json.dumps({**envelope, "choices": choices, "usage": usage}, ensure_ascii=False)

        async def produce(send):
            if chat:
                await send(chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                   "finish_reason": None} for i in range(len(reqs))]))
            usage = {}

            async def on_output(index, out):
                lp = list(out.logprobs or ()) if sampling.logprobs else None
                if not out.text and not out.finished and not lp:
                    return
                reason = finish_reason(out.finish_reason) if out.finished and out.finish_reason in (
                    "stop", "length", "budget") else None
                if chat:
                    ch = {"index": index, "delta": {"content": out.text} if out.text else {},
                          "logprobs": _chat_logprobs(lp), "finish_reason": reason}
                else:
                    ch = {"index": index, "text": out.text, "logprobs": _legacy_logprobs(lp), "finish_reason": reason}
                if out.finished:
                    ch["stop_reason"] = getattr(out, "stop_string", None)
                    usage[index] = out.usage
                await send(chunk([ch]))

            await call.run(reqs, on_output)
            if include_usage and usage:
                u = usage[0]
                await send(chunk([], _usage(u.prompt_tokens, sum(x.completion_tokens for x in usage.values()),
                                            u.cached_tokens)))

        return event_stream(call, produce, lambda e: openai_error(e, requested.field if requested else None))

    # ---- tools -----------------------------------------------------------------------------------------

    async def _tool_answer(self, request, body, prompt, prompt_ids, sampling, tools, choice: ToolChoice,
                           parallel: bool, stream: bool, include_usage: bool):
        core = self.core
        tok = core.engine.tokenizer
        max_model_len = core.engine.max_model_len
        call = Call(core, "http:" + request.url.path, request)
        await call.__aenter__()
        try:
            min_call = await self._min_call_tokens(call, request, tools, choice)
        except BaseException as e:
            await call.__aexit__(type(e), e, None)
            raise
        plan = ToolCallPlan(tools, choice, parallel=parallel, max_tokens=sampling.max_tokens,
                            user_stop=sampling.stop, min_call_tokens=min_call)
        usage = SimpleNamespace(first=None, completion=0)

        async def run_phase(text_so_far, spec, max_tokens, stop, on_text):
            ids = tok.encode(prompt + text_so_far) if text_so_far else prompt_ids
            max_tokens = min(max_tokens, max_model_len - len(ids))
            if max_tokens < 1:
                raise invalid("the model's context is full before the tool call is complete; shorten the prompt")
            constraint = await call.constraint(spec, max_tokens=max_tokens, room=max_model_len - len(ids))
            phase_sampling = dataclasses.replace(sampling, max_tokens=max_tokens, stop=tuple(stop), n=1)
            rec = CallRecord(call.rec.method, call.rec.request_id)
            parts = []

            async def on_output(_, out):
                parts.append(out.text)
                if on_text is not None and out.text:
                    await on_text(out.text)

            await call.run(call.engine_requests(ids, phase_sampling, constraint), on_output, rec)
            final = rec.finals[0]
            if usage.first is None:
                usage.first = final
            usage.completion += final.usage.completion_tokens
            return Phase("".join(parts), final.finish_reason, getattr(final, "stop_string", None),
                         final.usage.completion_tokens)

        def record(answer_reason: str):
            first = usage.first
            u = first.usage if first is not None else Usage()
            call.rec.finals[0] = SimpleNamespace(
                usage=Usage(prompt_tokens=u.prompt_tokens, cached_tokens=u.cached_tokens,
                            completion_tokens=usage.completion),
                timings=getattr(first, "timings", None), finish_reason=answer_reason)
            return _usage(u.prompt_tokens, usage.completion, u.cached_tokens)

        if stream:
            return self._stream_tools(call, plan, run_phase, record, include_usage)
        try:
            async def quiet(event, **data):
                pass

            answer = await unless_disconnected(request, plan.run(run_phase, quiet))
        except BaseException as e:
            await call.__aexit__(type(e), e, None)
            raise
        u = record(answer.finish_reason)
        await call.__aexit__(None, None, None)
        message = {"role": "assistant", "content": answer.content,
                   "tool_calls": [c.message() for c in answer.calls]}
        return {**self._envelope("chat.completion"),
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": finish_reason(answer.finish_reason), "stop_reason": None}],
                "usage": u}

    async def _min_call_tokens(self, call: Call, request, tools, choice: ToolChoice) -> dict[str, int]:
        """Per callable tool, the fewest tokens a whole call takes: its name (when the model picks among several)
        plus the shortest arguments its `parameters` schema admits. Compiling them here also refuses a bad
        schema before anything is generated (the error names `tools[i].function.parameters`)."""
        tok = self.core.engine.tokenizer
        picks_name = len(tools) > 1 and choice.mode != "named"
        out = {}
        for i, t in enumerate(tools):
            if choice.mode == "named" and t.name != choice.name:
                continue
            try:
                compiled, _ = await self.core.compile(
                    ConstraintSpec(kind="json_schema", value=json.dumps(t.parameters)), deadline=call.deadline,
                    client=client_of(request))
                args_min = await asyncio.to_thread(lambda c=compiled: c.cursor().min_tokens_to_finish())
            except RequestError as e:
                e.constraint_field = f"tools[{i}].function.parameters"
                raise
            out[t.name] = args_min + (len(tok.encode(t.name + '"')) if picks_name else 0)
        return out

    def _stream_tools(self, call: Call, plan: ToolCallPlan, run_phase, record, include_usage: bool):
        envelope = self._envelope("chat.completion.chunk")

        def chunk(delta, reason=None) -> str:
            return json.dumps({**envelope, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                         "finish_reason": reason}], "usage": None},
                              ensure_ascii=False)

        async def produce(send):
            async def emit(event, **data):
                if event == "content":
                    await send(chunk({"content": data["text"]}))
                elif event == "call":
                    await send(chunk({"tool_calls": [{"index": data["index"], "id": data["id"], "type": "function",
                                                      "function": {"name": data["name"], "arguments": ""}}]}))
                else:
                    await send(chunk({"tool_calls": [{"index": data["index"],
                                                      "function": {"arguments": data["text"]}}]}))

            await send(chunk({"role": "assistant", "content": None}))
            answer = await plan.run(run_phase, emit)
            u = record(answer.finish_reason)
            await send(chunk({}, finish_reason(answer.finish_reason)))
            if include_usage:
                await send(json.dumps({**envelope, "choices": [], "usage": u}))

        return event_stream(call, produce, openai_error)
