"""Settings: defaults, the environment, and refusals with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from webhook_gateway.settings import ConfigError, Settings

GATEWAY = str(Path(sys.executable).parent / "webhook-gateway")


def test_defaults_are_the_documented_development_ones() -> None:
    s = Settings.from_env({})
    assert s == Settings(
        listen="127.0.0.1:8080",
        payment_svc_target="127.0.0.1:50051",
        token="dev-gateway-token",
        secrets=("whsec_dev",),
        tolerance_seconds=300,
        max_body_bytes=65536,
        forward_timeout=5.0,
        drain_seconds=10.0,
        log_level="INFO",
        production=False,
    )


def test_the_environment_is_read() -> None:
    s = Settings.from_env(
        {
            "WEBHOOK_GATEWAY_LISTEN": "0.0.0.0:9000",
            "PAYMENT_SVC_TARGET": "payment-svc:50051",
            "WEBHOOK_GATEWAY_TOKEN": "tok",
            "WEBHOOK_SECRETS": " whsec_new , whsec_old,,whsec_new ",
            "WEBHOOK_TOLERANCE_SECONDS": "60",
            "WEBHOOK_MAX_BODY_BYTES": "1024",
            "WEBHOOK_FORWARD_TIMEOUT_SECONDS": "0.5",
            "WEBHOOK_GATEWAY_DRAIN_SECONDS": "0",
            "LOG_LEVEL": "debug",
        }
    )
    assert s.listen == "0.0.0.0:9000"
    assert s.payment_svc_target == "payment-svc:50051"
    assert s.token == "tok"
    assert s.secrets == ("whsec_new", "whsec_old")  # newest first, repeats dropped
    assert (s.tolerance_seconds, s.max_body_bytes) == (60, 1024)
    assert (s.forward_timeout, s.drain_seconds) == (0.5, 0.0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WEBHOOK_SECRETS": " , "}, "WEBHOOK_SECRETS"),
        ({"WEBHOOK_TOLERANCE_SECONDS": "5m"}, "WEBHOOK_TOLERANCE_SECONDS"),
        ({"WEBHOOK_TOLERANCE_SECONDS": "0"}, "WEBHOOK_TOLERANCE_SECONDS"),
        ({"WEBHOOK_MAX_BODY_BYTES": "-1"}, "WEBHOOK_MAX_BODY_BYTES"),
        ({"WEBHOOK_FORWARD_TIMEOUT_SECONDS": "nan"}, "WEBHOOK_FORWARD_TIMEOUT_SECONDS"),
        ({"WEBHOOK_FORWARD_TIMEOUT_SECONDS": "0"}, "WEBHOOK_FORWARD_TIMEOUT_SECONDS"),
        ({"WEBHOOK_GATEWAY_DRAIN_SECONDS": "-1"}, "WEBHOOK_GATEWAY_DRAIN_SECONDS"),
        ({"WEBHOOK_GATEWAY_LISTEN": "localhost"}, "WEBHOOK_GATEWAY_LISTEN"),
        ({"WEBHOOK_GATEWAY_LISTEN": "127.0.0.1:99999"}, "WEBHOOK_GATEWAY_LISTEN"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({"PAYMENTS_ENV": "production"}, "PAYMENTS_ENV=production"),
        (
            {"PAYMENTS_ENV": "production", "WEBHOOK_SECRETS": "whsec_live,whsec_dev"},
            "WEBHOOK_SECRETS",
        ),
        (
            {"PAYMENTS_ENV": "production", "WEBHOOK_SECRETS": "whsec_live"},
            "development defaults: set WEBHOOK_GATEWAY_TOKEN$",
        ),
    ],
)
def test_bad_configuration_is_refused_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_production_starts_without_the_development_defaults() -> None:
    env = {"PAYMENTS_ENV": "production", "WEBHOOK_SECRETS": "whsec_a", "WEBHOOK_GATEWAY_TOKEN": "t"}
    assert Settings.from_env(env).production


def test_the_process_exits_2_with_the_message_and_no_traceback() -> None:
    done = subprocess.run(
        [GATEWAY],
        env={"WEBHOOK_TOLERANCE_SECONDS": "soon", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "WEBHOOK_TOLERANCE_SECONDS must be an integer" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_flag_overrides_the_environment_and_is_checked_the_same_way() -> None:
    done = subprocess.run(
        [GATEWAY, "--listen", "nowhere"],
        env={"WEBHOOK_GATEWAY_LISTEN": "127.0.0.1:8080"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "WEBHOOK_GATEWAY_LISTEN must be host:port, got 'nowhere'" in done.stderr
