"""A short `payments bench` run end to end: its own stack, every phase, JSON.
Speed is what the benchmark measures; it is never asserted here."""

from __future__ import annotations

import json

from tests.cli.conftest import run_cli


def test_bench_smoke_json() -> None:
    args = ("bench", "--duration", "1", "--warmup", "0.5", "--concurrency", "4", "--rate", "50")
    result = run_cli(*args, "--json", timeout=110)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    expected = {"environment", "target", "cpu_count", "postgres", "options"}
    expected |= {"closed_loop", "open_loop", "raw_sql", "full_flow_to_raw"}
    assert expected <= set(report)
    assert report["cpu_count"] >= 1
    assert {"fsync", "synchronous_commit", "durable_commits"} <= set(report["postgres"])
    for phase in ("closed_loop", "open_loop", "raw_sql"):
        result_of = report[phase]
        assert {"completed", "payments_per_s", "latency_us", "errors", "statuses"} <= set(result_of)
        assert {"p50", "p90", "p99", "max"} <= set(result_of["latency_us"])
        assert result_of["completed"] > 0, phase
        assert result_of["statuses"].get("PAYMENT_STATUS_SUCCEEDED", 0) > 0, phase
    assert report["open_loop"]["target_rate"] == 50
    assert report["full_flow_to_raw"] is not None
