"""Settings: defaults, the environment, and refusals with a clear message;
`reconciler` exits 2 on bad configuration and `--once` 1 when a job fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.settings import ConfigError, Settings

RECONCILER = str(Path(sys.executable).parent / "reconciler")


def test_defaults_are_the_documented_development_ones() -> None:
    s = Settings.from_env({})
    assert s.reconciler_id == f"{socket.gethostname()}-{os.getpid()}"
    assert s == Settings(
        payment_svc_target="127.0.0.1:50051",
        token="dev-reconciler-token",
        stripe_api_base="http://127.0.0.1:12111",
        stripe_api_key="sk_test_dev",
        reconciler_id=s.reconciler_id,
        metrics_listen="127.0.0.1:9102",
        sweep_seconds=60,
        catch_up_seconds=60,
        settlement_seconds=300,
        grace_seconds=60,
        stuck_after_seconds=3600,
        redrive_window_seconds=3600,
        lease_seconds=60,
        settlement_window_seconds=86400,
        page_size=100,
        concurrency=16,
        provider_timeout=10,
        rpc_timeout=15,
        payment_svc_provider_timeout=10,
        payment_svc_db_timeout=2,
        drain_seconds=30,
        log_level="INFO",
        production=False,
    )


def test_the_environment_is_read() -> None:
    s = Settings.from_env(
        {
            "PAYMENT_SVC_TARGET": "payment-svc:50051",
            "RECONCILER_TOKEN": "tok",
            "STRIPE_API_BASE": "https://api.stripe.com/",
            "STRIPE_API_KEY": "sk_live_x",
            "RECONCILER_ID": "rec-a",
            "RECONCILER_METRICS_LISTEN": "0.0.0.0:9000",
            "RECONCILER_SWEEP_SECONDS": "5",
            "RECONCILER_CATCH_UP_SECONDS": "6",
            "RECONCILER_SETTLEMENT_SECONDS": "7.5",
            "RECONCILER_GRACE_SECONDS": "0",
            "RECONCILER_STUCK_AFTER_SECONDS": "120",
            "RECONCILER_REDRIVE_WINDOW_SECONDS": "600",
            "RECONCILER_LEASE_SECONDS": "30",
            "RECONCILER_SETTLEMENT_WINDOW_SECONDS": "3600",
            "RECONCILER_PAGE_SIZE": "10",
            "RECONCILER_CONCURRENCY": "4",
            "RECONCILER_PROVIDER_TIMEOUT_SECONDS": "2",
            "RECONCILER_RPC_TIMEOUT_SECONDS": "3",
            "PROVIDER_TIMEOUT_SECONDS": "1.5",
            "DB_TIMEOUT_SECONDS": "0.5",
            "RECONCILER_DRAIN_SECONDS": "0",
            "LOG_LEVEL": "debug",
        }
    )
    assert (s.payment_svc_target, s.token, s.reconciler_id) == ("payment-svc:50051", "tok", "rec-a")
    assert s.stripe_api_base == "https://api.stripe.com"
    assert (s.sweep_seconds, s.catch_up_seconds, s.settlement_seconds) == (5, 6, 7.5)
    assert (s.grace_seconds, s.stuck_after_seconds, s.redrive_window_seconds) == (0, 120, 600)
    assert (s.lease_seconds, s.settlement_window_seconds) == (30, 3600)
    assert (s.page_size, s.concurrency, s.provider_timeout, s.rpc_timeout) == (10, 4, 2, 3)
    assert (s.drain_seconds, s.metrics_listen) == (0, "0.0.0.0:9000")
    assert (s.payment_svc_provider_timeout, s.payment_svc_db_timeout) == (1.5, 0.5)


@pytest.mark.parametrize(
    ("env", "needed"),
    [
        ({"RECONCILER_RPC_TIMEOUT_SECONDS": "10"}, "14"),  # the old default
        ({"RECONCILER_RPC_TIMEOUT_SECONDS": "14"}, "14"),  # equal is not longer
        ({"PROVIDER_TIMEOUT_SECONDS": "12"}, "16"),
        ({"DB_TIMEOUT_SECONDS": "3"}, "16"),
    ],
)
def test_an_rpc_deadline_not_longer_than_a_redrive_is_refused(
    env: dict[str, str], needed: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(env)
    message = str(exc.value)
    assert "RECONCILER_RPC_TIMEOUT_SECONDS" in message
    assert "PROVIDER_TIMEOUT_SECONDS" in message and "DB_TIMEOUT_SECONDS" in message
    assert f"{needed} s" in message
    assert Settings.from_env({**env, "RECONCILER_RPC_TIMEOUT_SECONDS": "16.5"})


def test_the_reconciler_refuses_to_start_on_a_short_rpc_deadline() -> None:
    done = run("--once", RECONCILER_RPC_TIMEOUT_SECONDS="10", PROVIDER_TIMEOUT_SECONDS="10")
    assert done.returncode == 2
    assert "configuration error: RECONCILER_RPC_TIMEOUT_SECONDS (10) must be longer" in (
        done.stderr
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RECONCILER_SWEEP_SECONDS": "1m"}, "RECONCILER_SWEEP_SECONDS"),
        ({"RECONCILER_SWEEP_SECONDS": "0"}, "RECONCILER_SWEEP_SECONDS"),
        ({"RECONCILER_CATCH_UP_SECONDS": "-1"}, "RECONCILER_CATCH_UP_SECONDS"),
        ({"RECONCILER_SETTLEMENT_SECONDS": "nan"}, "RECONCILER_SETTLEMENT_SECONDS"),
        ({"RECONCILER_GRACE_SECONDS": "-5"}, "RECONCILER_GRACE_SECONDS"),
        ({"RECONCILER_LEASE_SECONDS": "0"}, "RECONCILER_LEASE_SECONDS"),
        ({"RECONCILER_PAGE_SIZE": "101"}, "RECONCILER_PAGE_SIZE"),
        ({"RECONCILER_PAGE_SIZE": "ten"}, "RECONCILER_PAGE_SIZE"),
        ({"RECONCILER_CONCURRENCY": "0"}, "RECONCILER_CONCURRENCY"),
        ({"RECONCILER_PROVIDER_TIMEOUT_SECONDS": "0"}, "RECONCILER_PROVIDER_TIMEOUT_SECONDS"),
        ({"RECONCILER_METRICS_LISTEN": "9102"}, "RECONCILER_METRICS_LISTEN"),
        ({"STRIPE_API_BASE": "127.0.0.1:12111"}, "STRIPE_API_BASE"),
        ({"RECONCILER_TOKEN": "tök"}, "RECONCILER_TOKEN"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        (
            {"RECONCILER_GRACE_SECONDS": "100", "RECONCILER_SETTLEMENT_WINDOW_SECONDS": "50"},
            "RECONCILER_GRACE_SECONDS",
        ),
    ],
)
def test_bad_values_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_production_refuses_the_development_defaults() -> None:
    with pytest.raises(ConfigError, match="RECONCILER_TOKEN and STRIPE_API_KEY"):
        Settings.from_env({"PAYMENTS_ENV": "production"})
    with pytest.raises(ConfigError, match="STRIPE_API_KEY"):
        Settings.from_env({"PAYMENTS_ENV": "production", "RECONCILER_TOKEN": "prod-token"})
    s = Settings.from_env(
        {"PAYMENTS_ENV": "production", "RECONCILER_TOKEN": "t", "STRIPE_API_KEY": "sk_live_1"}
    )
    assert s.production


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RECONCILER, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_configuration_exits_2_with_the_reason() -> None:
    done = run("--once", RECONCILER_PAGE_SIZE="0")
    assert done.returncode == 2
    assert "configuration error: RECONCILER_PAGE_SIZE must be from 1 to 100" in done.stderr
    done = run(PAYMENTS_ENV="production")
    assert done.returncode == 2
    assert "PAYMENTS_ENV=production refuses" in done.stderr


def test_the_redrive_window_is_an_hour_by_default_and_at_most_23_hours() -> None:
    assert Settings.from_env({}).redrive_window_seconds == 3600
    assert Settings.from_env({"RECONCILER_REDRIVE_WINDOW_SECONDS": "82800"}).redrive_window_seconds
    with pytest.raises(ConfigError, match=r"RECONCILER_REDRIVE_WINDOW_SECONDS must be at most"):
        Settings.from_env({"RECONCILER_REDRIVE_WINDOW_SECONDS": "82801"})
    with pytest.raises(ConfigError, match="RECONCILER_REDRIVE_WINDOW_SECONDS"):
        Settings.from_env({"RECONCILER_REDRIVE_WINDOW_SECONDS": "-1"})
    # The process refuses to start on it, with the reason.
    done = run("--once", RECONCILER_REDRIVE_WINDOW_SECONDS="86400")
    assert done.returncode == 2
    assert "configuration error: RECONCILER_REDRIVE_WINDOW_SECONDS must be at most 82800" in (
        done.stderr
    )
    assert "could charge twice" in done.stderr


def test_an_unknown_job_is_a_usage_error() -> None:
    done = run("--once", "--jobs", "sweep,settle")
    assert done.returncode == 2
    assert "unknown job settle" in done.stderr


def test_once_exits_1_when_nothing_can_be_reached() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    done = run(
        "--once",
        PAYMENT_SVC_TARGET=closed,
        STRIPE_API_BASE=f"http://{closed}",
        RECONCILER_RPC_TIMEOUT_SECONDS="1",
        PROVIDER_TIMEOUT_SECONDS="0.5",
        DB_TIMEOUT_SECONDS="0.2",
        RECONCILER_METRICS_LISTEN="127.0.0.1:0",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert '"reconciliation_run_failed"' in done.stdout
