"""Views for the control API (/_sim): JSON in and out; the names are a public contract.

/_sim/faults                              GET, POST (partial)
/_sim/ledger                              GET ?idempotency_key= &payment_id=
                                          (each intent with its refunds)
/_sim/payment_intents/{id}/settle         POST {"outcome": "succeeded"|"failed"}
/_sim/payment_intents/{id}/cancel         POST {"reason"?}  (provider-side)
/_sim/payment_intents/{id}/refund         POST {"amount"?}  -> refund; charge.refunded
/_sim/payment_intents/{id}/dispute        POST {"reason"?}  -> dispute; charge.dispute.created
/_sim/refunds/{id}/settle                 POST {"outcome"?: "succeeded"|"failed",
                                                "failure_reason"?}  a pending refund
/_sim/unrecorded_charges                  POST {"amount", "currency"}
/_sim/webhooks                            GET, POST (partial) endpoint + stats
/_sim/events                              GET ?type= &payment_id=  (+ delivery)
/_sim/events/{id}/redeliver               POST {"copies"?}
/_sim/reset                               POST {"webhook_config"?: bool}
"""

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
    app.router.add_post("/_sim/payment_intents/{intent}/cancel", cancel)
    app.router.add_post("/_sim/payment_intents/{intent}/refund", refund)
    app.router.add_post("/_sim/payment_intents/{intent}/dispute", dispute)
    app.router.add_post("/_sim/refunds/{refund}/settle", settle_refund)
    app.router.add_post("/_sim/refunds/{refund}/fail", fail_refund)
    app.router.add_post("/_sim/unrecorded_charges", unrecorded_charge)
    app.router.add_get("/_sim/webhooks", get_webhooks)
    app.router.add_post("/_sim/webhooks", set_webhooks)
    app.router.add_get("/_sim/events", get_events)
    app.router.add_post("/_sim/events/{event}/redeliver", redeliver)
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


async def cancel(request: web.Request) -> web.Response:
    body = _object(await _json_body(request))
    simulator = request.app[SIMULATOR]
    intent = simulator.provider_cancel(request.match_info["intent"], body.get("reason"))
    return web.json_response(intent.to_json())


async def refund(request: web.Request) -> web.Response:
    body = _object(await _json_body(request))
    simulator = request.app[SIMULATOR]
    return web.json_response(
        simulator.provider_refund(request.match_info["intent"], body.get("amount"))
    )


async def settle_refund(request: web.Request) -> web.Response:
    body = _object(await _json_body(request))
    simulator = request.app[SIMULATOR]
    refund = simulator.settle_refund(
        request.match_info["refund"], body.get("outcome"), body.get("failure_reason")
    )
    return web.json_response(refund)


async def fail_refund(request: web.Request) -> web.Response:
    body = _object(await _json_body(request))
    simulator = request.app[SIMULATOR]
    return web.json_response(
        simulator.fail_refund(request.match_info["refund"], body.get("failure_reason"))
    )


async def dispute(request: web.Request) -> web.Response:
    body = _object(await _json_body(request))
    simulator = request.app[SIMULATOR]
    return web.json_response(simulator.dispute(request.match_info["intent"], body.get("reason")))


async def get_webhooks(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].webhooks_json())


async def set_webhooks(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    simulator.configure_webhooks(await _json_body(request))
    return web.json_response(simulator.webhooks_json())


async def get_events(request: web.Request) -> web.Response:
    rows = request.app[SIMULATOR].event_rows(
        event_type=request.query.get("type"),
        payment_id=request.query.get("payment_id"),
    )
    return web.json_response({"events": rows})


async def redeliver(request: web.Request) -> web.Response:
    body = _object(await _json_body(request))
    delivery = request.app[SIMULATOR].redeliver(request.match_info["event"], body.get("copies"))
    return web.json_response(delivery)


async def unrecorded_charge(request: web.Request) -> web.Response:
    body = _object(await _json_body(request))
    intent = request.app[SIMULATOR].unrecorded_charge(body.get("amount"), body.get("currency"))
    return web.json_response(intent.to_json())


async def reset(request: web.Request) -> web.Response:
    body = _object(await _json_body(request))
    webhook_config = body.get("webhook_config", False)
    if not isinstance(webhook_config, bool):
        raise ControlError(400, "invalid_value", "webhook_config must be true or false")
    request.app[SIMULATOR].reset(webhook_config=webhook_config)
    return web.json_response({"reset": True, "webhook_config": webhook_config})


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
