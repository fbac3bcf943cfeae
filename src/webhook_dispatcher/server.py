"""The dispatcher's only listener: `init_app(metrics, healthy)`.

GET /metrics   Prometheus text
GET /healthz   200 while the dispatcher runs, 503 otherwise
GET /readyz    200 once it has reached payment-svc (a lease call answered)
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from webhook_dispatcher.metrics import CONTENT_TYPE, Metrics

METRICS = web.AppKey("metrics", Metrics)
HEALTHY: web.AppKey[Callable[[], bool]] = web.AppKey("healthy")
READY: web.AppKey[Callable[[], bool]] = web.AppKey("ready")


def init_app(
    metrics: Metrics, healthy: Callable[[], bool], ready: Callable[[], bool]
) -> web.Application:
    app = web.Application()
    app[METRICS] = metrics
    app[HEALTHY] = healthy
    app[READY] = ready
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", health_view)
    app.router.add_get("/readyz", ready_view)
    return app


async def metrics_view(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


async def health_view(request: web.Request) -> web.Response:
    if request.app[HEALTHY]():
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "stopped"}, status=503)


async def ready_view(request: web.Request) -> web.Response:
    if request.app[READY]():
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "not ready"}, status=503)
