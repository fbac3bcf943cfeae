"""The three jobs on APScheduler 3's AsyncIOScheduler, in the running loop.

    sweep            every RECONCILER_SWEEP_SECONDS       first run at start
    catch_up         every RECONCILER_CATCH_UP_SECONDS    first run at start
    settlement_diff  every RECONCILER_SETTLEMENT_SECONDS  first run at start

coalesce: runs missed while one was going (or the process was busy) become
one; max_instances=1: a job never overlaps itself; misfire_grace_time = the
interval: a run later than one interval is dropped, the next one comes.

Stopping: pause (no new runs), let running ones finish up to
RECONCILER_DRAIN_SECONDS, then shut down (which cancels what still runs; the
runner records those runs as interrupted).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.interval import IntervalTrigger

from reconciler.runner import Runner
from reconciler.settings import Settings

log = structlog.get_logger("reconciler")


class Schedule:
    def __init__(self, settings: Settings, runner: Runner) -> None:
        self._settings = settings
        self._runner = runner
        self._running: set[asyncio.Task[Any]] = set()
        self._scheduler = AsyncIOScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1}
        )
        for job, seconds in (
            ("sweep", settings.sweep_seconds),
            ("catch_up", settings.catch_up_seconds),
            ("settlement_diff", settings.settlement_seconds),
        ):
            self._scheduler.add_job(
                self._run,
                IntervalTrigger(seconds=seconds, timezone=UTC),
                args=(job,),
                id=job,
                name=job,
                misfire_grace_time=max(int(seconds), 1),
                next_run_time=datetime.now(UTC),
            )

    @property
    def healthy(self) -> bool:
        return bool(self._scheduler.state == STATE_RUNNING)

    def start(self) -> None:
        self._scheduler.start()
        log.info(
            "reconciler_scheduled",
            sweep_seconds=self._settings.sweep_seconds,
            catch_up_seconds=self._settings.catch_up_seconds,
            settlement_seconds=self._settings.settlement_seconds,
        )

    async def stop(self) -> None:
        self._scheduler.pause()
        if self._running:
            log.info("reconciler_draining", running=len(self._running))
            await asyncio.wait(set(self._running), timeout=self._settings.drain_seconds)
        self._scheduler.shutdown(wait=False)
        # shutdown is scheduled on the loop; let it run (it cancels what is left).
        await asyncio.sleep(0)
        if self._running:
            await asyncio.wait(set(self._running), timeout=5)

    async def _run(self, job: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            await self._runner.run(job)
        finally:
            self._running.discard(task)
