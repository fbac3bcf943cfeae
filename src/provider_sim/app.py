"""The aiohttp application: `init_app(settings)` wires the simulator and both APIs.

    /v1/...    stripe_api   Stripe's shapes, Bearer sk_... auth
    /_sim/...  control_api  JSON control of faults and the ledger (no auth; loopback)
    (background)            webhook delivery, owned by cleanup_ctx: started in the
                            running loop, stopped after the server stops taking requests

One middleware turns every error into the JSON shape of the API it belongs to,
so no request ever gets a traceback or an HTML page; another answers 503 on
the routes the fault `unavailable_routes` names. With a state location a
second one holds each response until what it reports is on disk (state.py), so
an acknowledged charge survives a SIGKILL; without one it is not installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from provider_sim import control_api, stripe_api
from provider_sim.appkeys import SETTINGS, SIMULATOR
from provider_sim.errors import ControlError, StripeApiError
from provider_sim.settings import SimSettings
from provider_sim.simulator import Simulator
from provider_sim.state import StateError

log = structlog.get_logger("provider_sim")


def init_app(settings: SimSettings) -> web.Application:
    durable = [] if settings.state_path is None else [_durable]
    app = web.Application(middlewares=[_json_errors, _unavailable_routes, *durable])
    app[SETTINGS] = settings
    app[SIMULATOR] = Simulator(settings)
    app.cleanup_ctx.append(_webhook_delivery)
    # on_shutdown runs before the server waits for open requests to finish.
    app.on_shutdown.append(_release_held_responses)
    stripe_api.add_routes(app)
    control_api.add_routes(app)
    return app


async def _webhook_delivery(app: web.Application) -> AsyncIterator[None]:
    simulator = app[SIMULATOR]
    await simulator.start()
    yield
    await simulator.stop()


async def _release_held_responses(app: web.Application) -> None:
    app[SIMULATOR].close()


@web.middleware
async def _durable(request: web.Request, handler: Handler) -> web.StreamResponse:
    simulator = request.app[SIMULATOR]
    try:
        response = await handler(request)
    except (StripeApiError, ControlError):
        # A refusal tells of the books too (a key in use, a charge already refunded).
        await simulator.durable()
        raise
    await simulator.durable()
    return response


@web.middleware
async def _unavailable_routes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The fault `unavailable_routes`: those Stripe routes answer 503, the rest as usual."""
    if request.app[SIMULATOR].faults.unavailable(request.method, request.path):
        raise StripeApiError(
            503,
            "api_error",
            f"{request.method} {request.path} is unavailable (injected by provider-sim).",
            should_retry=True,
        )
    return await handler(request)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except StripeApiError as error:
        return stripe_api.error_response(error)
    except ControlError as error:
        return control_api.error_response(error)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        if error.status in (404, 405):
            message = f"Unrecognized request URL ({request.method}: {request.path})."
        else:
            message = f"{error.text or error.reason} ({request.method}: {request.path})"
        if _is_stripe(request):
            return stripe_api.error_response(
                StripeApiError(error.status, "invalid_request_error", message)
            )
        reason = error.reason.lower().replace(" ", "_")
        return control_api.error_response(ControlError(error.status, reason, message))
    except StateError as error:
        # Logged once by the store; every later write fails the same way.
        if _is_stripe(request):
            return stripe_api.error_response(StripeApiError(500, "api_error", str(error)))
        return control_api.error_response(ControlError(500, "state_not_saved", str(error)))
    except Exception:
        log.exception("provider_sim.unhandled_error", method=request.method, path=request.path)
        if _is_stripe(request):
            return stripe_api.error_response(
                StripeApiError(500, "api_error", "An internal error occurred in provider-sim.")
            )
        return control_api.error_response(
            ControlError(500, "internal_error", "An internal error occurred in provider-sim.")
        )


def _is_stripe(request: web.Request) -> bool:
    return request.path.startswith("/v1/")
