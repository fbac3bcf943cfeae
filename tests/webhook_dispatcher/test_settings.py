"""webhook-dispatcher's settings: the SPEC's schedule by default, and bad
or development configuration refused at start with a clear message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from webhook_dispatcher.settings import SPEC_SCHEDULE, ConfigError, Settings


def test_defaults_are_the_spec() -> None:
    s = Settings.from_env({})
    assert s.retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert s.retry_schedule == SPEC_SCHEDULE
    assert (s.attempt_timeout, s.disable_after_failing) == (10, 5 * 86400)
    assert not s.production


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PAYMENTS_ENV": "production"}, "development token"),
        ({"WEBHOOK_RETRY_SCHEDULE": "5,soon"}, "WEBHOOK_RETRY_SCHEDULE"),
        ({"WEBHOOK_RETRY_SCHEDULE": "5,-1"}, "WEBHOOK_RETRY_SCHEDULE"),
        ({"WEBHOOK_RETRY_JITTER": "1.5"}, "WEBHOOK_RETRY_JITTER"),
        ({"WEBHOOK_LEASE_SECONDS": "5"}, "WEBHOOK_LEASE_SECONDS"),
        ({"WEBHOOK_CONCURRENCY": "0"}, "WEBHOOK_CONCURRENCY"),
        ({"WEBHOOK_DISPATCHER_METRICS_LISTEN": "nowhere"}, "WEBHOOK_DISPATCHER_METRICS_LISTEN"),
    ],
)
def test_bad_configuration_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_production_with_its_own_token_starts_its_settings() -> None:
    s = Settings.from_env({"PAYMENTS_ENV": "production", "WEBHOOK_DISPATCHER_TOKEN": "t" * 32})
    assert s.production


def test_the_process_exits_2_on_bad_configuration() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook_dispatcher.main"],
        env={"PAYMENTS_ENV": "production", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "Traceback" not in result.stderr
