"""`structgen serve`: run the gRPC server (and HTTP next to it, --http-port) on one model; prints where it listens, then "ready".

The flags come from the config dataclasses: one per EngineConfig and ServerConfig field, spelled `--field-name`
unless the field's metadata names its `flag`, with the metadata's `help` and `choices`; a bool is `--x/--no-x`.
Every flag defaults to "not given", so the dataclass default stays the only default, and a new knob is a new
flag without an edit here (tests/server/test_serve_cli.py checks both).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
import types
import typing

from ..engine.config import EngineConfig
from .config import ServerConfig

_SCALARS = (str, int, float)


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _flag_type(cls, f: dataclasses.Field) -> type:
    """The type a flag's string becomes: the field's scalar type (`int | None` -> int); str where the field's
    metadata has a `from_flag` converter. TypeError for a field no flag can express (give it `from_flag`)."""
    if "from_flag" in f.metadata:
        return str
    hint = typing.get_type_hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
    if hint is bool or hint in _SCALARS:
        return hint
    raise TypeError(f"{cls.__name__}.{f.name}: no flag for type {hint!r}; give the field a 'from_flag' converter")


def _default_text(f: dataclasses.Field) -> str:
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if default is None or "from_flag" in f.metadata:
        return ""
    if isinstance(default, bool):
        default = "on" if default else "off"
    return f" (default: {default})"


def add_config_arguments(parser, cls, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of the dataclass `cls` (but those named in `skip`), its value stored under the field's
    name (None: not given)."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = _flag_type(cls, f)
        help_text = f.metadata.get("help", "").replace("%", "%%") + _default_text(f)
        if kind is bool:
            parser.add_argument(flag_name(f), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        else:
            parser.add_argument(flag_name(f), dest=f.name, type=kind, default=None,
                                choices=f.metadata.get("choices"), help=help_text)


def config_kwargs(cls, args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict:
    """The fields of `cls` given on the command line (a `from_flag` converter runs even when its flag is not)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        value = getattr(args, f.name)
        if "from_flag" in f.metadata:
            out[f.name] = f.metadata["from_flag"](value)
        elif value is not None:
            out[f.name] = value
    return out


def add_arguments(p: argparse.ArgumentParser):
    add_config_arguments(p.add_argument_group("engine (EngineConfig)"), EngineConfig)
    add_config_arguments(p.add_argument_group("server (ServerConfig)"), ServerConfig)
    p.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")


def server_config(args) -> ServerConfig:
    return ServerConfig(**config_kwargs(ServerConfig, args))


def engine_config(args) -> EngineConfig:
    kwargs = config_kwargs(EngineConfig, args)
    if "draft_model" in kwargs and "speculation" not in kwargs:
        kwargs["speculation"] = "draft_model"   # --draft-model alone means: draft with it
    return EngineConfig(**kwargs)


async def _serve(args) -> int:
    from ..engine.async_engine import AsyncEngine
    from .server import Server

    cfg = server_config(args)
    try:
        engine = AsyncEngine.from_config(engine_config(args))
    except (ValueError, FileNotFoundError) as e:   # e.g. a draft model of another tokenizer, a missing folder
        print(f"structgen serve: {e}", file=sys.stderr)
        return 2
    server = Server(engine, cfg)
    try:
        port = await server.start()
    except OSError as e:
        print(f"structgen serve: {e}", file=sys.stderr)
        return 1
    server.install_signal_handlers()
    print(f"structgen: listening on {cfg.host}:{port}"
          + (f", HTTP (OpenAI /v1, SGLang /generate) on http://{cfg.host}:{server.http_port}"
             if server.http_port else "")
          + (f", metrics on http://{cfg.metrics_host}:{server.metrics.http_port}/metrics"
             if server.metrics.http_port else "")
          + (" (API key required)" if cfg.auth_required else ""), flush=True)
    print("ready", flush=True)
    await server.wait_closed()
    print("structgen: stopped", flush=True)
    return 0


def run(args) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        server_config(args)  # validate every option before the (slow) model load
        engine_config(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"structgen serve: {e}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args))
