"""HTTP next to gRPC on the same engine: the OpenAI-compatible API (/v1/*) and SGLang's native API (/generate, ...).

FastAPI + uvicorn (what vLLM and SGLang serve with) run in the server's own event loop; every request goes through
the same GenerationCore as gRPC: one admission queue, one compile cache, the same limits, metrics and request log.
"""

from .app import HttpServer, build_app

__all__ = ["HttpServer", "build_app"]
