"""The per-request token limits every API applies the same way (gRPC, OpenAI, SGLang): prompt vs context,
max_tokens vs the server's limit and the context's room."""

from __future__ import annotations

import grpc

from .wire import RequestError


def resolve_max_tokens(requested: int | None, *, prompt_len: int, max_model_len: int, default_max_tokens: int,
                       max_tokens_limit: int, name: str = "max_tokens") -> int:
    """The max_tokens a request runs with. `requested` None: the server's default, shrunk to what the context has
    left (an unset value never fails on length). `name` is the field as the client spelled it, for messages."""
    if prompt_len >= max_model_len:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"the prompt is {prompt_len} tokens but the model's context holds {max_model_len} "
                           f"(prompt + output); shorten the prompt")
    limit = min(max_tokens_limit, max_model_len - 1)
    if requested is None:
        return min(default_max_tokens, limit, max_model_len - prompt_len)
    if requested < 1:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{name} must be at least 1 (leave it unset for the server's default)")
    if requested > limit:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{name} is {requested}; this server allows at most {limit}")
    if prompt_len + requested > max_model_len:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"the prompt ({prompt_len} tokens) + {name} ({requested}) exceeds the model's context of "
                           f"{max_model_len} tokens; set {name} <= {max_model_len - prompt_len} or shorten the prompt")
    return requested
