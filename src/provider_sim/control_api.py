"""Views for the control API (/_sim): JSON in and out; the names are a public contract."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from provider_sim.appkeys import SIMULATOR
from provider_sim.errors import ControlError


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_post("/_sim/faults", set_faults)
    app.router.add_get("/_sim/ledger", get_ledger)
    app.router.add_post("/_sim/payment_intents/{intent}/settle", settle)
    app.router.add_post("/_sim/unrecorded_charges", unrecorded_charge)
    app.router.add_post("/_sim/reset", reset)


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].faults.to_json())


async def set_faults(request: web.Request) -> web.Response:
    faults = request.app[SIMULATOR].set_faults(await _json_body(request))
    return web.json_response(faults.to_json())


async def get_ledger(request: web.Request) -> web.Response:
    rows = request.app[SIMULATOR].ledger_rows(
        idempotency_key=request.query.get("idempotency_key"),
        payment_id=request.query.get("payment_id"),
    )
    return web.json_response({"payment_intents": rows})


async def settle(request: web.Request) -> web.Response:
    body = _object(await _json_body(request))
    intent = request.app[SIMULATOR].settle(request.match_info["intent"], body.get("outcome"))
    return web.json_response(intent.to_json())


async def unrecorded_charge(request: web.Request) -> web.Response:
    body = _object(await _json_body(request))
    intent = request.app[SIMULATOR].unrecorded_charge(body.get("amount"), body.get("currency"))
    return web.json_response(intent.to_json())


async def reset(request: web.Request) -> web.Response:
    request.app[SIMULATOR].reset()
    return web.json_response({"reset": True})


def error_response(error: ControlError) -> web.Response:
    return web.json_response(error.to_json(), status=error.status)


async def _json_body(request: web.Request) -> object:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body: object = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    return body


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ControlError(400, "invalid_body", "the body must be a JSON object")
    return body
