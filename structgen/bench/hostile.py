"""`structgen bench hostile`: bad and extreme inputs against a real server, as an attacker or a careless user sends them.

Malformed and extreme schemas (huge numbers and lengths, deep nesting, huge enums, $ref loops, pathological
patterns), regexes, choice lists, sampling parameters, prompts, and raw bytes that are no protobuf message at all, over
several connections at once. Every call must end with a status a person can act on (never UNKNOWN, never a
traceback) inside its deadline (plus a small grace); a good request sent on its own connection is answered during
the run and after it; the server's resident memory (with its compile workers) is sampled throughout.

The inputs come from a seeded generator (`hostile_cases`): the same seed gives the same inputs. The test suite runs
a small sample against a fresh `structgen serve` (tests/server/test_hostile.py); RESULTS.md has a full run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# A call may overrun its deadline by this much before it counts as a stall (a loaded 2-core machine).
DEADLINE_GRACE_S = 3.0
# Statuses that say nothing a person can act on.
UNCLEAR = ("UNKNOWN",)


@dataclass
class Case:
    """One hostile call: `method` is Generate, GenerateStream or Compile; `request` a message, or raw bytes."""

    name: str
    method: str
    request: object


@dataclass
class Outcome:
    name: str
    method: str
    status: str
    message: str
    elapsed_s: float


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    probes: list[tuple[float, bool, str]] = field(default_factory=list)  # (time, answered, status) of good requests
    memory_mb: list[tuple[float, float]] = field(default_factory=list)  # (time, server + workers RSS MiB)
    deadline_s: float = 0.0
    wall_s: float = 0.0
    end_split_mb: tuple[float, float] | None = None  # (server process, compile workers) at the end

    def statuses(self) -> Counter:
        return Counter(o.status for o in self.outcomes)

    def unclear(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in UNCLEAR or "Traceback" in o.message]

    def stalled(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.elapsed_s > self.deadline_s + DEADLINE_GRACE_S]

    def slowest(self) -> Outcome:
        return max(self.outcomes, key=lambda o: o.elapsed_s)

    def table(self) -> str:
        lines = ["| status | calls | median s | slowest s | example |", "|---|---:|---:|---:|---|"]
        by: dict[str, list[Outcome]] = {}
        for o in self.outcomes:
            by.setdefault(o.status, []).append(o)
        for status, outs in sorted(by.items(), key=lambda kv: -len(kv[1])):
            slow = max(outs, key=lambda o: o.elapsed_s)
            lines.append(f"| {status} | {len(outs)} | {statistics.median(o.elapsed_s for o in outs):.3f} | "
                         f"{slow.elapsed_s:.3f} | {slow.name}: {slow.message[:90]} |")
        return "\n".join(lines)

    def summary(self) -> str:
        s = self.slowest()
        mem = [m for _, m in self.memory_mb]
        ok_probes = sum(1 for _, ok, _ in self.probes if ok)
        out = [self.table(), "",
               f"- inputs: {len(self.outcomes)} calls in {self.wall_s:.1f} s; deadline {self.deadline_s:.0f} s each",
               f"- slowest call: {s.elapsed_s:.2f} s ({s.name}, {s.status})",
               f"- unclear statuses (UNKNOWN or a traceback): {len(self.unclear())}; past the deadline + "
               f"{DEADLINE_GRACE_S:.0f} s: {len(self.stalled())}",
               f"- good requests answered during the run: {ok_probes} of {len(self.probes)}"]
        if mem:
            out.append(f"- server + compile workers resident memory: start {mem[0]:.0f} MiB, peak {max(mem):.0f} MiB, "
                       f"end {mem[-1]:.0f} MiB" + (f" (server {self.end_split_mb[0]:.0f}, workers "
                                                   f"{self.end_split_mb[1]:.0f})" if self.end_split_mb else ""))
        return "\n".join(out)


# ---- the inputs ------------------------------------------------------------------------------------------------


def _nest(depth: int, kind: str = "object") -> dict:
    s: dict = {"type": "string"}
    for _ in range(depth):
        s = {"type": "object", "properties": {"a": s}} if kind == "object" else {"type": "array", "items": s}
    return s


def _nested_text(depth: int) -> str:
    return '{"properties": {"a": ' * depth + "{}" + "}}" * depth


def _schemas(rng: random.Random) -> list[tuple[str, str]]:
    """(name, JSON text) of hostile schemas: the issue's cases first, then their relatives."""
    big = 10 ** rng.randint(9, 18)
    return [
        ("minLength 1e9", json.dumps({"type": "string", "minLength": 1_000_000_000})),
        ("pattern a?^3000 a^3000", json.dumps({"type": "string", "pattern": "a?" * 3000 + "a" * 3000})),
        ("maxLength 1e400", '{"maxLength": 1e400}'),
        ("nested 400 objects", json.dumps(_nest(400))),
        ("nested 5000 (text)", _nested_text(5000)),
        ("nested 200 arrays", json.dumps(_nest(200, "array"))),
        ("maxLength huge", json.dumps({"type": "string", "maxLength": big})),
        ("minItems huge", json.dumps({"type": "array", "items": {"type": "integer"}, "minItems": big})),
        ("maxItems huge", json.dumps({"type": "array", "items": {"type": "integer"}, "maxItems": big})),
        ("minProperties huge", json.dumps({"type": "object", "minProperties": big})),
        ("minimum -1e308 maximum 1e308", json.dumps({"type": "number", "minimum": -1e308, "maximum": 1e308})),
        ("multipleOf tiny", json.dumps({"type": "number", "multipleOf": 1e-300})),
        ("integer bounds 2**200", json.dumps({"type": "integer", "minimum": 2 ** 200, "maximum": 2 ** 201})),
        ("NaN text", '{"type": "number", "minimum": NaN}'),
        ("enum 20000", json.dumps({"enum": [f"value-{i}-{rng.random()}" for i in range(20_000)]})),
        ("enum of deep values", json.dumps({"enum": [_nest(100)] * 3})),
        ("$ref loop", json.dumps({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}})),
        ("$ref self", json.dumps({"$ref": "#"})),
        ("$ref missing", json.dumps({"$ref": "#/$defs/nope"})),
        ("$ref remote", json.dumps({"$ref": "https://example.com/schema.json"})),
        ("properties 5000", json.dumps({"type": "object", "properties": {f"k{i}": {"type": "integer"}
                                                                          for i in range(5000)}})),
        ("required 5000 missing", json.dumps({"type": "object", "required": [f"k{i}" for i in range(5000)]})),
        ("anyOf 500", json.dumps({"anyOf": [{"type": "string", "pattern": f"^x{i}[a-z]+$"} for i in range(500)]})),
        ("allOf patterns", json.dumps({"type": "string", "allOf": [{"pattern": "[a-z]{%d,}" % (10 * i)}
                                                                   for i in range(1, 30)]})),
        ("pattern (a*)*b", json.dumps({"type": "string", "pattern": "^(a*)*b$"})),
        ("pattern (a|aa)+ x 50", json.dumps({"type": "string", "pattern": "(a|aa)+" * 50})),
        ("pattern {1000000}", json.dumps({"type": "string", "pattern": "^a{1000000}$"})),
        ("pattern {0,65535} nested", json.dumps({"type": "string", "pattern": "^((a{0,65535}){0,65535})$"})),
        ("pattern bad", json.dumps({"type": "string", "pattern": "(((["})),
        ("pattern backref", json.dumps({"type": "string", "pattern": "(a)\\1"})),
        ("format unknown", json.dumps({"type": "string", "format": "\u0000" * 10})),
        ("type 5", json.dumps({"type": 5})),
        ("type list of junk", json.dumps({"type": ["string", 7, None]})),
        ("properties not object", json.dumps({"properties": [1, 2, 3]})),
        ("schema is a string", json.dumps("string")),
        ("schema is null", "null"),
        ("truncated", json.dumps(_nest(20))[:57]),
        ("random bytes as text", bytes(rng.randrange(256) for _ in range(300)).decode("latin-1")),
        ("lone surrogate", '{"enum": ["\\ud800"]}'),
        ("huge key", json.dumps({"type": "object", "properties": {"k" * 200_000: {"type": "string"}},
                                 "required": ["k" * 200_000]})),
        ("const deep", json.dumps({"const": _nest(120)})),
    ]


def _regexes(rng: random.Random) -> list[tuple[str, str]]:
    return [
        ("regex a?^3000 a^3000", "a?" * 3000 + "a" * 3000),
        ("regex (a*)*", "(a*)*b"),
        ("regex {1000000}", "a{1000000}"),
        ("regex {1,2}^200", "(a{1,2}){200}"),
        ("regex alternation 20000", "|".join(f"w{rng.randrange(10**9)}" for _ in range(20_000))),
        ("regex unbalanced", "((a)"),
        ("regex lookbehind", "(?<=a)b"),
        ("regex backref", "(a)\\1"),
        ("regex empty class", "[]"),
        ("regex bad range", "[z-a]"),
        ("regex huge class", "[" + "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(5000)) + "]+"),
        ("regex empty language", "a&&b"),
        ("regex random junk", "".join(rng.choice("()[]{}*+?|\\^$.,-0123456789aZ") for _ in range(80))),
        ("regex NUL", "\x00+"),
    ]


def hostile_cases(seed: int = 0, limit: int | None = None) -> list[Case]:
    """The hostile calls, in a fixed order for a seed (the issue's named cases come first)."""
    from .._proto import structgen_pb2 as pb

    rng = random.Random(seed)
    cases: list[Case] = []

    def gen(name, **kw):
        cases.append(Case(name, "Generate", pb.GenerateRequest(**kw)))

    for name, text in _schemas(rng):
        cases.append(Case(f"compile {name}", "Compile",
                          pb.CompileRequest(constraint=pb.Constraint(json_schema=text))))
        gen(f"generate {name}", prompt="Answer in JSON:", constraint=pb.Constraint(json_schema=text), max_tokens=16)
    for name, pattern in _regexes(rng):
        cases.append(Case(f"compile {name}", "Compile", pb.CompileRequest(constraint=pb.Constraint(regex=pattern))))
        gen(f"generate {name}", prompt="x", constraint=pb.Constraint(regex=pattern), max_tokens=8)
    choice = pb.ChoiceList
    gen("choice empty list", prompt="x", constraint=pb.Constraint(choice=choice(choices=[])))
    gen("choice empty string", prompt="x", constraint=pb.Constraint(choice=choice(choices=["a", ""])))
    gen("choice 50000", prompt="x", constraint=pb.Constraint(choice=choice(
        choices=[f"c{rng.randrange(10**12)}" for _ in range(50_000)])), max_tokens=8)
    gen("choice one huge", prompt="x", constraint=pb.Constraint(choice=choice(choices=["y" * 100_000])), max_tokens=8)
    gen("compiled id unknown", prompt="x", constraint=pb.Constraint(compiled_id="c-nope"))
    gen("compiled id empty", prompt="x", constraint=pb.Constraint(compiled_id=""))
    sp = pb.SamplingParams
    for name, params in [("temperature NaN", dict(temperature=float("nan"))),
                         ("temperature -1", dict(temperature=-1.0)), ("temperature inf", dict(temperature=float("inf"))),
                         ("top_p 7", dict(top_p=7.0)), ("top_k huge", dict(top_k=2**31)), ("min_p -3", dict(min_p=-3.0)),
                         ("n 10000", dict(n=10_000)), ("top_logprobs 1000", dict(logprobs=True, top_logprobs=1000)),
                         ("logit_bias out of vocab", dict(logit_bias={4_000_000_000: 5.0})),
                         ("logit_bias inf", dict(logit_bias={1: float("inf")})),
                         ("penalties huge", dict(frequency_penalty=1e30, presence_penalty=-1e30)),
                         ("repetition_penalty 0", dict(repetition_penalty=0.0)),
                         ("dry junk", dict(dry_multiplier=float("nan"), dry_base=0.0, dry_allowed_length=2**31)),
                         ("seed max", dict(seed=2**64 - 1))]:
        gen(f"sampling {name}", prompt="Say hi:", sampling=sp(**params), max_tokens=4)
    gen("max_tokens 0", prompt="x", max_tokens=0)
    gen("max_tokens 2**32-1", prompt="x", max_tokens=2**32 - 1)
    gen("no prompt", max_tokens=4)
    gen("prompt and messages", prompt="x", messages=[pb.ChatMessage(role="user", content="y")])
    gen("bad role", messages=[pb.ChatMessage(role="root", content="y")])
    gen("prompt past the context", prompt="word " * 20_000, max_tokens=4)
    gen("prompt of NULs", prompt="\x00" * 5000, max_tokens=4)
    gen("stop strings 10000", prompt="x", stop=["s" * 100] * 10_000, max_tokens=4)
    gen("request id huge", prompt="x", request_id="r" * 100_000, max_tokens=2)
    cases.append(Case("stream schema minLength 1e9", "GenerateStream", pb.GenerateRequest(
        prompt="x", constraint=pb.Constraint(json_schema=json.dumps({"type": "string", "minLength": 10**9})),
        max_tokens=8)))
    cases.append(Case("stream temperature NaN", "GenerateStream",
                      pb.GenerateRequest(prompt="x", sampling=sp(temperature=float("nan")), max_tokens=4)))
    cases.append(Case("compile unset", "Compile", pb.CompileRequest()))
    cases.append(Case("compile compiled id", "Compile", pb.CompileRequest(constraint=pb.Constraint(compiled_id="x"))))
    # Raw bytes that are no protobuf message (or a truncated one) at each method.
    for method in ("Generate", "GenerateStream", "Compile"):
        for i in range(3):
            cases.append(Case(f"raw bytes {method} #{i}", method,
                              bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000)))))
    cases.append(Case("raw truncated message", "Generate", pb.GenerateRequest(
        prompt="hello" * 10, constraint=pb.Constraint(regex="[a-z]+")).SerializeToString()[:-7]))
    cases.append(Case("raw oversized message", "Generate", b"\x0a\xff\xff\xff\x7f" + b"a" * 1000))
    return cases[:limit] if limit is not None else cases


# ---- running them ----------------------------------------------------------------------------------------------


def _method_call(channel, method: str, raw: bool):
    from .._proto import structgen_pb2 as pb

    path = f"/structgen.v1.StructGen/{method}"
    out_type = {"Generate": pb.GenerateResponse, "GenerateStream": pb.GenerateStreamResponse,
                "Compile": pb.CompileResponse}[method]
    ser = (lambda b: b) if raw else (lambda m: m.SerializeToString())
    if method == "GenerateStream":
        return channel.unary_stream(path, request_serializer=ser, response_deserializer=out_type.FromString)
    return channel.unary_unary(path, request_serializer=ser, response_deserializer=out_type.FromString)


def _call(channel, case: Case, deadline_s: float, metadata) -> Outcome:
    import grpc

    fn = _method_call(channel, case.method, isinstance(case.request, (bytes, bytearray)))
    t0 = time.monotonic()
    try:
        result = fn(case.request, timeout=deadline_s, metadata=metadata)
        if case.method == "GenerateStream":
            for _ in result:
                pass
        status, message = "OK", ""
    except grpc.RpcError as e:
        status, message = e.code().name, e.details() or ""
    return Outcome(case.name, case.method, status, message, time.monotonic() - t0)


def rss_mb(pid: int, with_children: bool = True) -> float:
    """Resident MiB of `pid` and all its descendants (the server and its compile workers)."""
    from ..fsm.compile_worker import resident_bytes

    return sum(resident_bytes(p) for p in [pid] + (_descendants(pid) if with_children else [])) / 2**20


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children of each of its threads: a worker started from a pool thread is that
    thread's child, not the main thread's)."""
    import os

    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids += [int(k) for k in fh.read().split()]
        except OSError:
            pass
    return kids + [d for k in kids for d in _descendants(k)]


def run_hostile(target: str, cases: list[Case], *, deadline_s: float = 20.0, connections: int = 4,
                concurrency: int = 8, api_key: str | None = None, server_pid: int | None = None,
                probe_every_s: float = 2.0, progress=None) -> Report:
    """Send every case (spread over `connections` channels, `concurrency` at a time) and a good request every
    `probe_every_s` on a channel of its own; sample `server_pid`'s memory; then one good request after the run."""
    import grpc

    from .._proto import structgen_pb2 as pb

    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    # NOTE: a local subchannel pool per channel: without it grpc shares one connection among equal channels, and
    # the server would see one client.
    channels = [grpc.insecure_channel(target, options=opts + [("grpc.use_local_subchannel_pool", 1)])
                for _ in range(connections)]
    probe_channel = grpc.insecure_channel(target, options=opts)
    good = pb.GenerateRequest(prompt="The answer is", constraint=pb.Constraint(choice=pb.ChoiceList(
        choices=["yes", "no"])), max_tokens=4)
    report = Report(deadline_s=deadline_s)
    done = threading.Event()
    t_start = time.monotonic()

    def probe() -> tuple[float, bool, str]:
        o = _call(probe_channel, Case("good request", "Generate", good), max(deadline_s, 30.0), metadata)
        return time.monotonic() - t_start, o.status == "OK", o.status

    def background():
        next_probe = time.monotonic()
        while not done.is_set():
            if server_pid is not None:
                report.memory_mb.append((time.monotonic() - t_start, rss_mb(server_pid)))
            if time.monotonic() >= next_probe:
                report.probes.append(probe())
                next_probe = time.monotonic() + probe_every_s
            done.wait(0.25)

    watcher = threading.Thread(target=background, name="hostile-probe", daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            futs = [pool.submit(_call, channels[i % connections], c, deadline_s, metadata)
                    for i, c in enumerate(cases)]
            for f in futs:
                report.outcomes.append(f.result())
                if progress is not None:
                    progress()
    finally:
        done.set()
        watcher.join()
    report.probes.append(probe())  # after the run
    if server_pid is not None:
        report.memory_mb.append((time.monotonic() - t_start, rss_mb(server_pid)))
        alone = rss_mb(server_pid, with_children=False)
        report.end_split_mb = (alone, report.memory_mb[-1][1] - alone)
    report.wall_s = time.monotonic() - t_start
    for ch in channels + [probe_channel]:
        ch.close()
    return report


# ---- the CLI ---------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_common

    p.add_argument("--server", default=None,
                   help="HOST:PORT of a running server (default: start `structgen serve` on a free port for the run)")
    p.add_argument("--server-pid", type=int, default=None, help="with --server: its pid, to sample its memory")
    p.add_argument("--api-key", default=None, help="API key for --server")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    p.add_argument("--rounds", type=int, default=1, help="send the inputs this many times (new seeds each round)")
    p.add_argument("--deadline", type=float, default=20.0, help="gRPC deadline of every call, seconds")
    p.add_argument("--concurrency", type=int, default=8, help="calls in flight at once")
    p.add_argument("--connections", type=int, default=4, help="client connections the calls are spread over")
    p.add_argument("--serve-arg", action="append", default=[],
                   help="extra `structgen serve` argument for the server started here (repeatable)")
    add_common(p, "hostile")


def start_server(extra: list[str], env: dict | None = None):
    """`structgen serve --port 0` in a subprocess; (process, "127.0.0.1:PORT") once it prints ready."""
    import os
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "structgen.cli", "serve", "--port", "0", "--http-port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})
    port = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"listening on [\d.]+:(\d+)", line)
        port = int(m.group(1)) if m else port
        if line.strip() == "ready" and port:
            return proc, f"127.0.0.1:{port}"
    proc.kill()
    raise RuntimeError("structgen serve did not become ready")


def run(args: argparse.Namespace) -> int:
    proc = None
    target, pid = args.server, args.server_pid
    if target is None:
        proc, target = start_server(args.serve_arg)
        pid = proc.pid
    cases = [c for r in range(args.rounds) for c in hostile_cases(args.seed + r)]
    try:
        from tqdm import tqdm

        bar = None if args.no_progress else tqdm(total=len(cases), desc="hostile calls", file=sys.stderr)
        report = run_hostile(target, cases, deadline_s=args.deadline, connections=args.connections,
                             concurrency=args.concurrency, api_key=args.api_key, server_pid=pid,
                             progress=bar.update if bar else None)
        if bar:
            bar.close()
        exit_s = None
        if proc is not None:
            import signal

            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            exit_s = time.monotonic() - t0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
    text = report.summary() + (f"\n- SIGTERM to exit: {exit_s:.1f} s (exit code {proc.returncode})"
                               if exit_s is not None else "")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text(text + "\n")
    with open(args.out / "results.jsonl", "w") as fh:
        for o in report.outcomes:
            fh.write(json.dumps(dataclasses.asdict(o)) + "\n")
    return 1 if report.unclear() or report.stalled() else 0
