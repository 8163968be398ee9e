"""The grpc.aio server: StructGen + health + reflection, auth, metrics, limits and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .._proto import structgen_pb2 as pb
from .admission import Admission
from .auth import ApiKeyInterceptor
from .config import ServerConfig
from .generation import GenerationCore
from .handlers import add_servicer
from .http import HttpServer, build_app
from .metrics import ServerMetrics
from .servicer import StructGenServicer

LOG = logging.getLogger("structgen.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StructGen"].full_name  # "structgen.v1.StructGen"


class Server:
    """Serves one engine. `await start()`, then `await wait_closed()`; `await stop()` drains and shuts down.

    The engine must not be started yet: the server starts and shuts it down with itself.
    """

    def __init__(self, engine, config: ServerConfig):
        self.engine = engine
        self.config = config
        self.admission = Admission(config.max_queue)
        self.metrics = ServerMetrics(self._load)
        self.core = GenerationCore(engine, config, self.admission, self.metrics)
        self.servicer = StructGenServicer(self.core)
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        self.port: int | None = None
        self.http: HttpServer | None = None
        self.http_port: int | None = None
        self._grpc: grpc.aio.Server | None = None
        # Readiness, apart from admission.draining: on SIGTERM readiness goes first (load balancers take the
        # replica out), the refusals come drain_grace_s later. False until the engine is loaded.
        self.ready = False
        self._stopping: asyncio.Task | None = None
        self._closed = asyncio.Event()

    def _load(self) -> dict:
        try:
            return {**self.core.load(), "compile": self.core.compile_stats()}
        except Exception:  # a scrape must never fail because the engine is mid-shutdown
            return {"in_flight": len(self.admission)}

    async def start(self) -> int:
        """Start the engine and listen; returns the bound port."""
        cfg = self.config
        interceptors = [ApiKeyInterceptor(cfg.api_keys)] if cfg.api_keys else []
        self._grpc = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", cfg.max_request_bytes),
                ("grpc.max_send_message_length", cfg.max_response_bytes),
                # One process per port: a second server on the same port must fail, not share it silently.
                ("grpc.so_reuseport", 0),
            ],
        )
        add_servicer(self.servicer, self._grpc)  # bytes that are no request message: INVALID_ARGUMENT, not UNKNOWN
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._grpc)
        try:
            self.port = self._grpc.add_insecure_port(cfg.address)
        except RuntimeError as e:  # grpc reports a failed bind as RuntimeError
            raise OSError(f"could not bind {cfg.address}: {e}") from None
        if self.port == 0:
            raise OSError(f"could not bind {cfg.address}")
        if cfg.http_port is not None:
            self.http = HttpServer(build_app(self.core, model_name=self.core.model_name(), model_info=self._model_info(),
                                             is_ready=lambda: self.ready,
                                             is_accepting=lambda: not self.admission.draining),
                                   cfg.host, cfg.http_port)
            self.http_port = self.http.bind()
        # NOTE: bind before starting the engine, so a taken port fails fast without loading anything more.
        await self.engine.start()
        await self._grpc.start()
        if self.http is not None:
            await self.http.start()
        if cfg.metrics_port is not None:
            self.metrics.serve_http(cfg.metrics_host, cfg.metrics_port)
        self.ready = True
        await self._set_serving(True)
        return self.port

    def _model_info(self) -> dict:
        mc = getattr(getattr(self.engine, "engine", None), "model", None)
        cfg = getattr(mc, "config", None)
        return {"model_type": getattr(cfg, "model_type", None) or "llama",
                "architectures": list(getattr(cfg, "architectures", None) or ["LlamaForCausalLM"])}

    async def _set_serving(self, serving: bool):
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            result = self.health.set(name, status)
            if asyncio.iscoroutine(result):
                await result

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop | None = None):
        """SIGTERM / SIGINT start a graceful stop (main thread only)."""
        loop = loop or asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    def request_stop(self) -> asyncio.Task:
        """Begin a graceful stop (idempotent); returns the task doing it."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self.stop())
        return self._stopping

    async def stop(self, drain_timeout_s: float | None = None):
        """Turn readiness off (HTTP /health and /readiness 503, gRPC health NOT_SERVING) while still serving for
        `drain_grace_s`, then stop accepting (UNAVAILABLE), let in-flight requests finish for up to the drain
        timeout, abort the rest with UNAVAILABLE, then shut the engine down."""
        if self._grpc is None or self._closed.is_set():
            return
        timeout = self.config.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        self.ready = False
        await self._set_serving(False)
        if self.config.drain_grace_s > 0:
            LOG.info("not ready; still accepting for %.1f s (drain grace)", self.config.drain_grace_s)
            await asyncio.sleep(self.config.drain_grace_s)
        self.admission.draining = True
        LOG.info("draining %d in-flight requests (up to %.1f s)", len(self.admission), timeout)
        if not await self.admission.wait_empty(timeout):
            left = self.admission.stop_all(grpc.StatusCode.UNAVAILABLE,
                                           "the server shut down before this request finished; retry it")
            LOG.warning("drain timeout: aborting %d requests", len(left))
            for ticket in left:
                await self.engine.abort(ticket.engine_id)
            await self.admission.wait_empty(5.0)
        await self._grpc.stop(grace=1.0)
        if self.http is not None:
            await self.http.stop()
        await self.engine.shutdown()
        self.metrics.close()
        self._closed.set()

    async def wait_closed(self):
        await self._closed.wait()
