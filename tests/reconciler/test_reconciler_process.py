"""The reconciler as a real process: scheduled runs and their metrics, the
provider going away and coming back, a catch-up killed mid-run that resumes
from its checkpoint, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from reconciler_testkit import (
    RECONCILER,
    assert_completed,
    create,
    http_status,
    new_reconciler_id,
    reconciler_env,
    run_once,
    sample,
    scrape,
    sync_stub,
    until,
)

from payments.v1 import provider_sync_service_pb2 as sync
from payments_dev.devdb import free_port
from payments_dev.stack import Stack, wait_for_port
from tests.support import SimControl, auth

JOBS = ("sweep", "catch_up", "settlement_diff")
METRIC_NAMES = (
    "reconciler_discrepancies_total",
    "reconciler_open_discrepancies",
    "reconciler_oldest_non_final_payment_age_seconds",
    "reconciler_non_final_payments",
    "reconciler_last_success_timestamp_seconds",
    "reconciler_runs_total",
    "reconciler_fixes_total",
    "reconciler_errors_total",
    "reconciler_job_duration_seconds",
)
KINDS = (
    "STUCK_PAYMENT",
    "UNRECORDED_PROVIDER_PAYMENT",
    "MISSING_AT_PROVIDER",
    "AMOUNT_MISMATCH",
    "FINAL_STATE_CONTRADICTED",
    "UNMATCHED_PROVIDER_EVENT",
)


class Scheduled:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path, id: str) -> None:
        self.proc, self.port, self.log, self.id = proc, port, log, id
        self.url = f"http://127.0.0.1:{port}"

    async def metrics(self) -> str:
        return await scrape(f"{self.url}/metrics")


@pytest.fixture
def scheduled(stack: Stack, tmp_path: Path) -> Iterator[Callable[..., Scheduled]]:
    """Starts `reconciler` (scheduled, every second) beside the session stack."""
    started: list[Scheduled] = []

    def spawn(**env: str) -> Scheduled:
        port = free_port()
        reconciler_id = new_reconciler_id("scheduled")
        log = tmp_path / f"reconciler-{len(started)}.log"
        full = reconciler_env(
            stack,
            RECONCILER_METRICS_LISTEN=f"127.0.0.1:{port}",
            RECONCILER_ID=reconciler_id,
            RECONCILER_SWEEP_SECONDS="1",
            RECONCILER_CATCH_UP_SECONDS="1",
            RECONCILER_SETTLEMENT_SECONDS="1",
            RECONCILER_DRAIN_SECONDS="10",
            **env,
        )
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [RECONCILER],
                env=full,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        started.append(Scheduled(proc, port, log, reconciler_id))
        wait_for_port("127.0.0.1", port, 30, proc, "reconciler")
        return started[-1]

    yield spawn
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


@contextlib.asynccontextmanager
async def proxy(port: int, to: tuple[str, int]) -> AsyncIterator[None]:
    """A TCP relay on `port` to `to`: the provider coming back at an address."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*to)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()


async def last_runs(channel: grpc.aio.Channel) -> dict[str, sync.ReconciliationRun]:
    reply = await sync_stub(channel).GetReconciliationStatus(
        sync.GetReconciliationStatusRequest(), metadata=auth("reconciler"), timeout=5
    )
    return {run.job: run for run in reply.last_runs}


async def test_runs_fail_while_the_provider_is_unreachable_and_succeed_once_it_is_back(
    stack: Stack,
    channel: grpc.aio.Channel,
    scheduled: Callable[..., Scheduled],
) -> None:
    await create(channel, payment_method="pm_card_processing")  # something to sweep
    port = free_port()  # nothing listens there yet
    rec = scheduled(STRIPE_API_BASE=f"http://127.0.0.1:{port}")

    async def all_failed() -> bool:
        text = await rec.metrics()
        return all(
            (sample(text, "reconciler_runs_total", reconciler_job=j, result="failed") or 0) >= 1
            for j in JOBS
        )

    await until(all_failed, timeout=30)
    text = await rec.metrics()
    for job in JOBS:
        assert sample(text, "reconciler_runs_total", reconciler_job=job, result="ok") == 0
        assert sample(text, "reconciler_last_success_timestamp_seconds", reconciler_job=job) is None

    async def recorded_as_failed() -> bool:
        runs = await last_runs(channel)
        return all(
            runs[j].reconciler_id == rec.id and not runs[j].succeeded and runs[j].error_message
            for j in JOBS
            if j in runs
        ) and set(JOBS) <= set(runs)

    await until(recorded_as_failed, timeout=15)
    assert await http_status(f"{rec.url}/healthz") == 200  # the process runs; its runs fail

    sim = stack.sim_url.removeprefix("http://").split(":")
    async with proxy(port, (sim[0], int(sim[1]))):

        async def all_ok() -> bool:
            text = await rec.metrics()
            return all(
                (sample(text, "reconciler_runs_total", reconciler_job=j, result="ok") or 0) >= 1
                for j in JOBS
            )

        await until(all_ok, timeout=30)
    text = await rec.metrics()
    for job in JOBS:
        assert (
            sample(text, "reconciler_last_success_timestamp_seconds", reconciler_job=job) or 0
        ) > 0


async def test_once_pointed_at_a_closed_port_fails_every_job_and_the_next_pass_succeeds(
    stack: Stack, channel: grpc.aio.Channel
) -> None:
    await create(channel, payment_method="pm_card_processing")
    closed = free_port()
    failed = await run_once(stack, STRIPE_API_BASE=f"http://127.0.0.1:{closed}")
    assert failed.returncode == 1
    for job in JOBS:
        run = failed.runs[job]
        assert not run["succeeded"]
        assert "provider" in run["error_message"]
        assert run["run_id"]  # recorded in payment-svc all the same
    assert failed.events("reconciliation_run_failed")
    assert_completed(await run_once(stack))


async def test_metrics_and_health_of_a_running_reconciler(
    stack: Stack, scheduled: Callable[..., Scheduled]
) -> None:
    rec = scheduled()

    async def ran() -> bool:
        text = await rec.metrics()
        return all(
            (sample(text, "reconciler_runs_total", reconciler_job=j, result="ok") or 0) >= 1
            for j in JOBS
        )

    await until(ran, timeout=30)
    text = await rec.metrics()
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in text, name
    for kind in KINDS:
        assert sample(text, "reconciler_discrepancies_total", kind=kind) is not None
        assert sample(text, "reconciler_open_discrepancies", kind=kind) is not None
    for job in JOBS:
        assert (
            sample(text, "reconciler_runs_total", reconciler_job=job, result="failed") is not None
        )
        assert sample(text, "reconciler_fixes_total", reconciler_job=job) is not None
        assert sample(text, "reconciler_errors_total", reconciler_job=job) is not None
        assert (sample(text, "reconciler_job_duration_seconds_count", reconciler_job=job) or 0) >= 1
        assert (
            sample(text, "reconciler_last_success_timestamp_seconds", reconciler_job=job) or 0
        ) > 0
    assert sample(text, "reconciler_non_final_payments") is not None
    assert sample(text, "reconciler_oldest_non_final_payment_age_seconds") is not None
    assert await http_status(f"{rec.url}/healthz") == 200
    assert await http_status(f"{rec.url}/readyz") == 200

    rec.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(rec.proc.wait, 20) == 0
    lines = [json.loads(line) for line in rec.log.read_text().splitlines() if line.startswith("{")]
    assert lines[-1]["event"] == "reconciler_stopped"


async def test_a_catch_up_killed_mid_run_resumes_from_its_checkpoint(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl
) -> None:
    client = sync_stub(channel)
    reconciler = auth("reconciler")
    since = int(time.time()) - 1
    await client.SaveCheckpoint(
        sync.SaveCheckpointRequest(
            name="catch_up", value=json.dumps({"created": since, "event_id": ""})
        ),
        metadata=reconciler,
        timeout=5,
    )
    await asyncio.gather(*(create(channel, payment_method="pm_card_visa") for _ in range(60)))
    await sim.faults(latency_ms=40)  # each page of events takes a while
    env = {"RECONCILER_PAGE_SIZE": "5", "RECONCILER_ID": new_reconciler_id("killed")}

    proc = await asyncio.create_subprocess_exec(
        RECONCILER,
        "--once",
        "--jobs",
        "catch_up",
        env=reconciler_env(stack, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    saved = 0
    while saved < 3:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, "the reconciler ended before its third page"
        saved += b'"catch_up_checkpoint"' in line
    proc.kill()
    await proc.wait()
    reply = await client.GetCheckpoint(
        sync.GetCheckpointRequest(name="catch_up"), metadata=reconciler, timeout=5
    )
    killed_at = json.loads(reply.value)
    assert killed_at["event_id"].startswith("evt_")
    assert killed_at["created"] >= since

    resumed = await run_once(stack, "--jobs", "catch_up", **env)
    assert_completed(resumed)
    [start] = resumed.events("catch_up_from")
    # It starts where the first one stopped (or later, had another replica moved on).
    assert start["event_id"]
    assert start["created"] >= killed_at["created"]
    events_since = [
        e
        for e in await sim.events()
        if e["created"] >= since and e["type"].startswith(("payment_intent.", "charge."))
    ]
    assert 0 < resumed.runs["catch_up"]["scanned"] < len(events_since)
    reply = await client.GetCheckpoint(
        sync.GetCheckpointRequest(name="catch_up"), metadata=reconciler, timeout=5
    )
    assert json.loads(reply.value)["event_id"] == events_since[-1]["id"]
