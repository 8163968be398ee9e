"""SGLang's native HTTP API, as its frontend language (`sglang.RuntimeEndpoint`) and `sglang-router` use it:
POST /generate, GET /get_model_info, GET /get_server_info (and /server_info), GET /health, GET /health_generate,
POST /flush_cache.

/generate takes `text` or `input_ids` (one, or a batch as a list), `sampling_params` (SGLang's names; the
constraint as `regex`, `json_schema` or `ebnf`), `stream`, and `return_logprob` with `logprob_start_len` (prompt
logprobs from that position: `sgl.select` scores its choices with them) and `top_logprobs_num`. `max_new_tokens: 0`
runs the prefill only (the prompt enters the prefix cache; prompt logprobs come back).
"""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request
from starlette.responses import Response

from ... import __version__
from ...engine.requests import GenerateRequest, SamplingParams
from ..wire import RequestError, invalid
from .body import Body
from .calls import Call, authorize, event_stream, read_json, unless_disconnected
from .constraints import one_constraint, sglang_constraints
from .errors import sglang_error
from .openai_api import finite, possible
from .sampling import sglang_sampling

MAX_BATCH = 64


def _finish(final, prefill_only: bool) -> dict:
    if prefill_only:
        return {"type": "length", "length": 0}
    if final.finish_reason == "length":
        return {"type": "length", "length": final.usage.completion_tokens}
    stop = getattr(final, "stop_string", None)
    if stop is not None:
        return {"type": "stop", "matched": stop}
    if final.finish_reason == "budget":
        return {"type": "stop", "matched": None, "budget": True}
    return {"type": "stop", "matched": None}  # EOS or the constraint's end, not a stop string


def _triples(logprobs, with_text: bool, first_token: tuple[int, str] | None = None) -> tuple[list, list]:
    """[[logprob, token_id, text|None], ...] and the top alternatives in the same form, per position.
    `first_token`: (id, text) of the prompt's first token, whose entry has no logprob (as SGLang's: [None, id, text])."""
    values, tops = [], []
    for lp in logprobs:
        if lp is None:  # the prompt's first token has no logprob
            token_id, text = first_token or (None, None)
            values.append([None, token_id, text if with_text else None])
            tops.append(None)
            continue
        values.append([finite(lp.logprob), lp.token_id, lp.text if with_text else None])
        tops.append([[v, t, x if with_text else None] for t, x, v in possible(lp.top)] or None)
    return values, tops


class _Item:
    """One prompt of a /generate request, ready to run."""

    def __init__(self, prompt_ids, sampling: SamplingParams, requested, prefill_only: bool, logprob_from):
        self.prompt_ids = prompt_ids
        self.sampling = sampling
        self.requested = requested
        self.prefill_only = prefill_only
        self.logprob_from = logprob_from


class SGLangApi:
    def __init__(self, core, model_name: str, model_info: dict, is_serving):
        self.core = core
        self.model_name = model_name
        self.model_info = model_info
        self.is_serving = is_serving  # () -> bool: readiness, False from the start of a drain

    # ---- info and health ---------------------------------------------------------------------------------

    async def get_model_info(self, request: Request):
        authorize(request, self.core.config.api_keys)
        return {"model_path": self.model_name, "tokenizer_path": self.model_name, "is_generation": True,
                "preferred_sampling_params": None, "weight_version": "default",
                "has_image_understanding": False, "has_audio_understanding": False, **self.model_info}

    async def get_server_info(self, request: Request):
        authorize(request, self.core.config.api_keys)
        cfg = self.core.config
        engine = self.core.engine
        return {"version": __version__, "model_path": self.model_name, "tokenizer_path": self.model_name,
                "context_length": int(engine.max_model_len), "max_req_input_len": int(engine.max_model_len) - 1,
                "max_running_requests": cfg.max_queue, "max_total_num_tokens": int(engine.max_model_len),
                "dp_size": 1, "tp_size": 1, "served_model_name": self.model_name, "server": "structgen",
                "tokenizer_fingerprint": engine.tokenizer.fingerprint, **await self.core.engine_fingerprint(),
                "internal_states": [{"load": self.core.load()}]}

    async def health(self, request: Request):
        """Readiness: 200 while this replica should get new requests, 503 from the start of a drain."""
        return Response(status_code=200 if self.is_serving() else 503)

    async def get_load(self, request: Request):
        """SGLang's load report, one entry per data-parallel rank (structgen has one): sglang-router's /get_loads
        and its power_of_two policy read `num_tokens` (here: the tokens the KV cache holds for running requests)."""
        load = self.core.load()
        block = int(getattr(getattr(self.core.engine, "config", None), "block_size", 1) or 1)
        return [{"dp_rank": 0, "num_reqs": load.get("running", 0), "num_waiting_reqs": load.get("queued", 0),
                 "num_tokens": load.get("kv_blocks_used", 0) * block}]

    async def liveness(self, request: Request):
        """200 while the process answers HTTP, draining or not."""
        return Response(status_code=200)

    async def health_generate(self, request: Request):
        """200 once one token was generated end to end (the engine loop is alive), 503 otherwise."""
        if not self.is_serving():
            return Response(status_code=503)
        tok = self.core.engine.tokenizer
        try:
            async with Call(self.core, "http:/health_generate", request) as call:
                reqs = [GenerateRequest(request_id=call.engine_id, prompt_token_ids=tok.encode("ok") or [0],
                                        sampling=SamplingParams(max_tokens=1))]

                async def ignore(index, out):
                    pass

                await asyncio.wait_for(call.run(reqs, ignore), 20)
        except (RequestError, TimeoutError):
            return Response(status_code=503)
        return Response(status_code=200)

    async def flush_cache(self, request: Request):
        authorize(request, self.core.config.api_keys)
        flush = getattr(self.core.engine, "flush_prefix_cache", None)
        if flush is None:
            return Response("this engine has no prefix cache to flush", status_code=400)
        freed = await flush()
        return Response(f"Cache flushed ({freed} blocks freed).", status_code=200)

    # ---- POST /generate ----------------------------------------------------------------------------------

    def _items(self, body: Body) -> tuple[list[_Item], bool]:
        """The request's prompts (a batch when `text` / `input_ids` is a list of them) and whether it is a batch."""
        tok = self.core.engine.tokenizer
        if body.has("text") and body.has("input_ids"):
            raise body.error("input_ids", "cannot be given together with text")
        if body.has("text"):
            raw = body.data["text"]
            batch = isinstance(raw, list)
            texts = raw if batch else [raw]
            prompts = []
            for i, t in enumerate(texts):
                if not isinstance(t, str) or not t:
                    raise body.error(f"text[{i}]" if batch else "text", "must be a non-empty string")
                prompts.append(tok.encode(t))
        elif body.has("input_ids"):
            raw = body.data["input_ids"]
            batch = isinstance(raw, list) and bool(raw) and isinstance(raw[0], list)
            prompts = raw if batch else [raw]
            for i, ids in enumerate(prompts):
                if not isinstance(ids, list) or not ids or not all(
                        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < tok.vocab_size for t in ids):
                    raise body.error(f"input_ids[{i}]" if batch else "input_ids",
                                     f"must be a non-empty array of token ids in [0, {tok.vocab_size})")
        else:
            raise invalid("the request has no prompt: give text or input_ids")
        if len(prompts) > MAX_BATCH:
            raise body.error("text" if body.has("text") else "input_ids",
                             f"holds {len(prompts)} prompts; at most {MAX_BATCH} per request")
        raw_params = body.data.get("sampling_params") or {}
        params_list = raw_params if isinstance(raw_params, list) else [raw_params] * len(prompts)
        if len(params_list) != len(prompts):
            raise body.error("sampling_params", f"has {len(params_list)} entries for {len(prompts)} prompts")

        def per_item(name, i, kind, default):
            value = body.data.get(name)
            if isinstance(value, list):
                if len(value) != len(prompts):
                    raise body.error(name, f"has {len(value)} entries for {len(prompts)} prompts")
                value = value[i]
            if value is None:
                return default
            if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
                raise body.error(name, f"must be {kind.__name__}")
            return value

        items = []
        for i, ids in enumerate(prompts):
            params = Body(params_list[i], f"sampling_params[{i}]" if isinstance(raw_params, list) else
                          "sampling_params")
            want = per_item("return_logprob", i, bool, False)
            top = per_item("top_logprobs_num", i, int, 0) if want else 0
            if not 0 <= top <= 20:
                raise body.error("top_logprobs_num", f"must be in [0, 20], got {top}")
            sampling, prefill_only = sglang_sampling(params, prompt_len=len(ids), core=self.core, logprobs=want,
                                                     top_logprobs=top)
            start = per_item("logprob_start_len", i, int, -1) if want else -1
            logprob_from = min(start, len(ids) - 1) if start >= 0 else None
            items.append(_Item(ids, sampling, one_constraint(sglang_constraints(params), params), prefill_only,
                               logprob_from))
        return items, batch

    async def generate(self, request: Request):
        authorize(request, self.core.config.api_keys)
        body = Body(await read_json(request, self.core.config.max_request_bytes))
        items, batch = self._items(body)
        with_text = bool(body.get("return_text_in_logprobs", bool, False))
        rid = body.get("rid", (str, list))
        if body.get("stream", bool, False):
            if batch or items[0].sampling.n > 1:
                raise body.error("stream", "is supported for one prompt and n = 1 only")
            return await self._stream(request, items[0], with_text, rid if isinstance(rid, str) else None)
        results = await unless_disconnected(request, asyncio.gather(
            *(self._run_one(request, item, with_text, None) for item in items)))
        flat = [r for group in results for r in group]
        return flat if batch or len(flat) > 1 else flat[0]

    async def _prepare(self, call: Call, item: _Item) -> list:
        constraint = await call.constraint(item.requested.spec if item.requested else None,
                                           max_tokens=item.sampling.max_tokens,
                                           room=self.core.engine.max_model_len - len(item.prompt_ids))
        extra = {"prompt_logprobs_from": item.logprob_from} if item.logprob_from is not None else {}
        return call.engine_requests(item.prompt_ids, item.sampling, constraint, **extra)

    def _result(self, call: Call, item: _Item, text: str, token_ids: list, logprobs: list, prompt_lps, final,
                with_text: bool, index: int = 0) -> dict:
        u = final.usage
        meta = {"id": call.rec.request_id if index == 0 else f"{call.rec.request_id}#{index}",
                "finish_reason": _finish(final, item.prefill_only), "prompt_tokens": u.prompt_tokens,
                "completion_tokens": 0 if item.prefill_only else u.completion_tokens,
                "cached_tokens": u.cached_tokens,
                "e2e_latency": getattr(final.timings, "total_s", None)}
        if item.sampling.logprobs:
            first = item.prompt_ids[0]
            values, tops = _triples(prompt_lps or [], with_text,
                                    (first, self.core.engine.tokenizer.decode([first])))
            meta["input_token_logprobs"] = values
            meta["input_top_logprobs"] = tops
            out_values, out_tops = _triples([] if item.prefill_only else logprobs, with_text)
            meta["output_token_logprobs"] = out_values
            meta["output_top_logprobs"] = out_tops
        if item.prefill_only:
            text, token_ids = "", []
        return {"text": text, "output_ids": token_ids, "meta_info": meta}

    async def _run_one(self, request: Request, item: _Item, with_text: bool, rid) -> list[dict]:
        try:
            async with Call(self.core, "http:/generate", request, rid) as call:
                reqs = await self._prepare(call, item)
                got: dict[int, dict] = {}

                async def collect(index, out):
                    g = got.setdefault(index, {"text": [], "ids": [], "lps": [], "prompt": None})
                    g["text"].append(out.text)
                    g["ids"].extend(out.token_ids)
                    g["lps"].extend(out.logprobs or ())
                    if getattr(out, "prompt_logprobs", None) is not None:
                        g["prompt"] = out.prompt_logprobs
                    g["final"] = out

                await call.run(reqs, collect)
                return [self._result(call, item, "".join(g["text"]), g["ids"], g["lps"], g["prompt"], g["final"],
                                     with_text, i) for i, g in sorted(got.items())]
        except RequestError as e:
            e.constraint_field = item.requested.field if item.requested else None
            raise

    async def _stream(self, request: Request, item: _Item, with_text: bool, rid):
        call = Call(self.core, "http:/generate", request, rid)
        await call.__aenter__()
        try:
            reqs = await self._prepare(call, item)
        except BaseException as e:
            await call.__aexit__(type(e), e, None)
            if isinstance(e, RequestError):
                e.constraint_field = item.requested.field if item.requested else None
            raise
        async def produce(send):
            text, ids, lps, prompt = [], [], [], None

            async def on_output(index, out):
                nonlocal prompt
                text.append(out.text)
                ids.extend(out.token_ids)
                lps.extend(out.logprobs or ())
                if getattr(out, "prompt_logprobs", None) is not None:
                    prompt = out.prompt_logprobs
                if out.finished or out.text:
                    final = out if out.finished else _Partial(out)
                    result = self._result(call, item, "".join(text), list(ids), lps, prompt, final, with_text)
                    if not out.finished:
                        result["meta_info"]["finish_reason"] = None
                    await send(json.dumps(result, ensure_ascii=False))

            await call.run(reqs, on_output)

        field = item.requested.field if item.requested else None
        return event_stream(call, produce, lambda e: sglang_error(e, field))


class _Partial:
    """A streamed delta seen as a final for the running counts of a chunk's meta_info."""

    def __init__(self, out):
        self.usage = out.usage
        self.timings = out.timings
        self.finish_reason = None
        self.token_ids = out.token_ids

