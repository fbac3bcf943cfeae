"""The dispatcher's work loop (SPEC §3d). It keeps no state of its own:
payment-svc holds the queue, the cursors and the leases.

    Dispatcher       every lease/3 s: LeaseWebhookEndpoints; one EndpointWorker
                     per endpoint held; a worker whose endpoint is no longer
                     held stops
    EndpointWorker   FetchWebhookMessages (of each payment its oldest
                     undelivered update, when due; none of a payment already
                     in flight) -> one task per message: sign, POST, decide
                     (retry.py), RecordWebhookAttempt

At least once: an update leaves payment-svc's queue only when an attempt's
outcome is recorded. A replica killed between the POST and the record
leaves it queued; whoever holds the endpoint next sends it again, with the
same webhook-id. SIGTERM: no new attempts; those in flight get the drain
time to finish and be recorded; the rest stay queued; the leases are
released so that another replica takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import structlog

from payments.v1 import webhook_dispatch_service_pb2 as pb
from payments.webhooks import sign
from webhook_dispatcher.metrics import Metrics
from webhook_dispatcher.retry import Outcome, decide, status_class
from webhook_dispatcher.rpc import Attempt, DispatchRpc, Endpoint, LeaseLost
from webhook_dispatcher.sender import Sender
from webhook_dispatcher.settings import Settings

log = structlog.get_logger("webhook_dispatcher")

# A record that payment-svc does not take is tried again this often, this
# many times; after that the update stays queued and is sent again.
_RECORD_TRIES = 5
_RECORD_PAUSE = 0.5


class EndpointWorker:
    def __init__(
        self,
        endpoint: Endpoint,
        rpc: DispatchRpc,
        sender: Sender,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.endpoint = endpoint
        self._rpc = rpc
        self._sender = sender
        self._settings = settings
        self._metrics = metrics
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self.done = False

    def stop(self) -> None:
        """No new attempts; those in flight go on (drain)."""
        self._stopping = True
        self._wake.set()

    async def drain(self, timeout: float) -> None:
        tasks = list(self._in_flight.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()  # stays queued at payment-svc: sent again later
            if pending:
                await asyncio.wait(pending)

    async def run(self) -> None:
        try:
            await self._loop()
        except LeaseLost:
            log.info("webhook_endpoint_released", endpoint_id=self.endpoint.id)
        finally:
            self.done = True
            with contextlib.suppress(KeyError):
                self._metrics.oldest_undelivered.remove(self.endpoint.id)

    async def _loop(self) -> None:
        while not self._stopping:
            room = self._settings.concurrency - len(self._in_flight)
            if room <= 0:
                await self._wait(self._settings.poll_seconds)
                continue
            try:
                reply = await self._rpc.fetch(self.endpoint.id, room, list(self._in_flight))
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "webhook_fetch_failed", endpoint_id=self.endpoint.id, code=exc.code().name
                )
                await self._wait(max(self._settings.poll_seconds, 1.0))
                continue
            self._gauge(reply)
            for message in reply.messages:
                if message.payment_id in self._in_flight or self._stopping:
                    continue
                task = asyncio.create_task(self._attempt(message))
                self._in_flight[message.payment_id] = task
                task.add_done_callback(self._finisher(message.payment_id))
            if not reply.messages:
                wait = self._settings.poll_seconds
                if reply.HasField("next_due_in"):
                    wait = min(wait, max(0.01, reply.next_due_in.ToTimedelta().total_seconds()))
                await self._wait(wait)

    def _gauge(self, reply: pb.FetchWebhookMessagesResponse) -> None:
        age = 0.0
        if reply.HasField("oldest_undelivered_at"):
            oldest = reply.oldest_undelivered_at.ToDatetime(tzinfo=UTC)
            age = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        self._metrics.oldest_undelivered.labels(self.endpoint.id).set(age)

    def _finisher(self, payment_id: str) -> Callable[[asyncio.Task[None]], None]:
        def finished(_: asyncio.Task[None]) -> None:
            self._in_flight.pop(payment_id, None)
            self._wake.set()

        return finished

    async def _wait(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _attempt(self, message: pb.WebhookMessage) -> None:
        endpoint = self.endpoint
        attempted_at = datetime.now(UTC)
        headers = sign(endpoint.secrets, message.update_id, int(time.time()), message.body)
        answer, seconds = await self._sender.post(endpoint.url, message.body, headers)
        outcome, retry_in = decide(
            answer, message.attempt, self._settings.retry_schedule, self._settings.retry_jitter
        )
        self._metrics.attempts.labels(outcome.value, status_class(answer.status)).inc()
        self._metrics.attempt_seconds.observe(seconds)
        log.info(
            "webhook_attempt",
            endpoint_id=endpoint.id,
            update_id=message.update_id,
            attempt=message.attempt,
            status=answer.status,
            error=answer.error,
            outcome=outcome.value,
            retry_in=round(retry_in, 3),
        )
        attempt = Attempt(
            endpoint.id,
            message,
            attempted_at,
            answer.status,
            answer.error,
            seconds,
            outcome,
            retry_in,
        )
        for tries in range(1, _RECORD_TRIES + 1):
            try:
                reply = await self._rpc.record(attempt, self._settings.disable_after_failing)
                break
            except grpc.aio.AioRpcError as exc:
                if tries == _RECORD_TRIES:
                    log.warning(
                        "webhook_record_failed", endpoint_id=endpoint.id, code=exc.code().name
                    )
                    return  # still queued: sent again later, same webhook-id
                await asyncio.sleep(_RECORD_PAUSE * tries)
        if not reply.endpoint_enabled:
            if outcome is not Outcome.DELIVERED and reply.disabled_reason.startswith("DISABLED_"):
                self._metrics.endpoints_disabled.labels(reply.disabled_reason).inc()
                log.warning(
                    "webhook_endpoint_disabled",
                    endpoint_id=endpoint.id,
                    reason=reply.disabled_reason,
                )
            self.stop()


class Dispatcher:
    def __init__(
        self, rpc: DispatchRpc, sender: Sender, settings: Settings, metrics: Metrics
    ) -> None:
        self._rpc = rpc
        self._sender = sender
        self._settings = settings
        self._metrics = metrics
        self._workers: dict[str, tuple[EndpointWorker, asyncio.Task[None]]] = {}
        self.ready = False

    async def run(self, stop: asyncio.Event) -> None:
        every = self._settings.lease_seconds / 3
        while not stop.is_set():
            try:
                held = await self._rpc.lease(
                    self._settings.lease_seconds, self._settings.max_endpoints
                )
                self.ready = True
                self._follow(held)
            except grpc.aio.AioRpcError as exc:
                log.warning("webhook_lease_failed", code=exc.code().name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await stop.wait()
        await self.shutdown()

    def _follow(self, held: list[Endpoint]) -> None:
        ids = {e.id for e in held}
        for endpoint_id, (worker, _) in list(self._workers.items()):
            if endpoint_id not in ids or worker.done:
                worker.stop()
                if worker.done:
                    del self._workers[endpoint_id]
        for endpoint in held:
            current = self._workers.get(endpoint.id)
            if current is not None and not current[0].done:
                current[0].endpoint = endpoint  # a new URL or secret applies from now
                continue
            worker = EndpointWorker(
                endpoint, self._rpc, self._sender, self._settings, self._metrics
            )
            self._workers[endpoint.id] = (worker, asyncio.create_task(worker.run()))
        self._metrics.endpoints_served.set(len(ids))

    async def shutdown(self) -> None:
        for worker, _ in self._workers.values():
            worker.stop()
        await asyncio.gather(
            *(w.drain(self._settings.drain_seconds) for w, _ in self._workers.values())
        )
        tasks = [t for _, t in self._workers.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self._settings.rpc_timeout)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._rpc.release()
