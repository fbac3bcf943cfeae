"""The reconciler's only listener: `init_app(metrics, health)`.

GET /metrics   Prometheus text
GET /healthz   200 while the scheduler runs, 503 otherwise
GET /readyz    the same: the reconciler serves no traffic, it only has to be running
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from reconciler.metrics import CONTENT_TYPE, Metrics

METRICS = web.AppKey("metrics", Metrics)
HEALTHY: web.AppKey[Callable[[], bool]] = web.AppKey("healthy")


def init_app(metrics: Metrics, healthy: Callable[[], bool]) -> web.Application:
    app = web.Application()
    app[METRICS] = metrics
    app[HEALTHY] = healthy
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", health_view)
    app.router.add_get("/readyz", health_view)
    return app


async def metrics_view(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def health_view(request: web.Request) -> web.Response:
    if request.app[HEALTHY]():
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "stopped"}, status=503)
