"""The HTTP app (FastAPI) and its server (uvicorn, in the gRPC server's event loop).

Errors come back in the shape of the API the path belongs to: OpenAI's under /v1/, SGLang's elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import grpc

from ..wire import RequestError
from .errors import headers_of, openai_error, sglang_error, status_of
from .openai_api import OpenAIApi
from .sglang_api import SGLangApi

LOG = logging.getLogger("structgen.server.http")


def _error_response(request: Request, e: RequestError) -> JSONResponse:
    field = getattr(e, "constraint_field", None)
    shape = openai_error if request.url.path.startswith("/v1/") else sglang_error
    return JSONResponse(shape(e, field), status_code=status_of(e), headers=headers_of(e))


def build_app(core, *, model_name: str, model_info: dict | None = None, is_ready=lambda: True,
              is_accepting=lambda: True) -> FastAPI:
    """The FastAPI app of one server: OpenAI's /v1/* and SGLang's native endpoints over `core`.

    `is_ready()`: readiness (False from the start of a drain; /health, /readiness, /health_generate answer 503);
    `is_accepting()`: whether new requests are admitted (False a drain grace later; they answer 503).
    """
    app = FastAPI(title="structgen", docs_url=None, redoc_url=None, openapi_url=None)
    openai = OpenAIApi(core, model_name)
    sglang = SGLangApi(core, model_name, model_info or {}, is_ready)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError):
        return _error_response(request, e)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        code = grpc.StatusCode.NOT_FOUND if e.status_code == 404 else grpc.StatusCode.INVALID_ARGUMENT
        err = RequestError(code, f"{request.method} {request.url.path}: {e.detail}")
        err.status = e.status_code
        return _error_response(request, err)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):  # a bug fails its own request, never the server
        LOG.exception("internal error on %s", request.url.path)
        return _error_response(request, RequestError(grpc.StatusCode.INTERNAL, f"internal error: {e!r}"))

    def unless_draining(handler):
        async def route(request: Request):
            if not is_accepting():
                raise RequestError(grpc.StatusCode.UNAVAILABLE,
                                   "the server is shutting down; retry on another replica")
            return await handler(request)
        route.__name__ = handler.__name__
        return route

    app.add_api_route("/v1/models", openai.models, methods=["GET"])
    app.add_api_route("/v1/chat/completions", unless_draining(openai.chat_completions), methods=["POST"])
    app.add_api_route("/v1/completions", unless_draining(openai.completions), methods=["POST"])
    app.add_api_route("/generate", unless_draining(sglang.generate), methods=["POST"])
    for path in ("/get_model_info", "/model_info"):
        app.add_api_route(path, sglang.get_model_info, methods=["GET"])
    for path in ("/get_server_info", "/server_info"):
        app.add_api_route(path, sglang.get_server_info, methods=["GET"])
    # /health is readiness, as SGLang's own is and as sglang-router health-checks it by default; /liveness is
    # 200 while the process serves HTTP at all (a drain must not make an orchestrator restart the replica).
    for path in ("/health", "/readiness"):
        app.add_api_route(path, sglang.health, methods=["GET"])
    app.add_api_route("/liveness", sglang.liveness, methods=["GET"])
    app.add_api_route("/get_load", sglang.get_load, methods=["GET"])  # no key: load balancers carry none
    app.add_api_route("/health_generate", sglang.health_generate, methods=["GET"])
    app.add_api_route("/flush_cache", sglang.flush_cache, methods=["POST", "GET"])

    async def metrics(request: Request):
        return Response(generate_latest(core.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"])
    return app


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our loop: the gRPC server owns SIGTERM / SIGINT (one graceful stop for both APIs)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class HttpServer:
    """Serves `app` on host:port. `bind()` first (a taken port fails before the model loads), then `start()`."""

    def __init__(self, app, host: str, port: int):
        self.app = app
        self.host = host
        self.port = port
        self._socket: socket.socket | None = None
        self._server: _EmbeddedUvicorn | None = None
        self._task: asyncio.Task | None = None

    def bind(self) -> int:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        # NOTE: a replica restarted on its port after a crash (structgen cluster) must bind while the dead one's
        # connections sit in TIME_WAIT; on Linux SO_REUSEADDR still refuses a second live listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise OSError(f"could not bind HTTP {self.host}:{self.port}: {e.strerror or e}") from None
        sock.listen(2048)
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        return self.port

    async def start(self):
        if self._socket is None:
            self.bind()
        config = uvicorn.Config(self.app, lifespan="off", log_level="warning", access_log=False,
                                timeout_graceful_shutdown=2, timeout_keep_alive=30)
        self._server = _EmbeddedUvicorn(config)
        config.load()
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup(sockets=[self._socket])
        self._task = asyncio.get_running_loop().create_task(self._server.main_loop())

    async def stop(self):
        if self._server is None:
            return
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._server.shutdown(sockets=[self._socket])
        self._socket.close()
        self._server = None
