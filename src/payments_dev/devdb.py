"""An embedded Postgres for local runs and tests, when DATABASE_URL is unset.

The binaries come from the PyPI package `pgserver`; this module drives them
directly (initdb, pg_ctl) rather than through pgserver's own server object,
because tests need what that object does not offer: a TCP port, durable
settings we choose, and stop / start / pause (SIGSTOP) of a running cluster.
As root, Postgres refuses to run, so the cluster belongs to a system user
(`pgserver`, created on first use, as pgserver itself does).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

SYSTEM_USER = "pgserver"


def _bin_path() -> Path:
    # Imported late: importing pgserver warns about XDG_RUNTIME_DIR, and
    # most users of this module (DATABASE_URL set) never need it.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def free_port() -> int:
    """A free port for a listener of ours, below the kernel's ephemeral
    range. bind(0) picks from that range, where any outgoing connection
    (to Postgres, to the provider) may take the port as its source port
    before our child binds it: a start that failed now and then with
    "port ... is already in use"."""
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(max(1024, low - 20000), low)
        if port_is_free(port):
            return port
    with socket.socket() as s:  # the low range is full: take what the kernel gives
        s.bind(("127.0.0.1", 0))
        found: int = s.getsockname()[1]
        return found


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return max(2048, int(text.split()[0]))
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; macOS's starts higher


def port_is_free(port: int) -> bool:
    """Whether a listener of ours could bind the port now (as the servers
    do, with SO_REUSEADDR: a port in TIME_WAIT is free)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalPostgres:
    def __init__(self, datadir: Path, port: int | None = None) -> None:
        self.datadir = datadir.resolve()
        self.port = port or free_port()
        self._user = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        argv = [str(_bin_path() / tool), *args]
        if self._user is not None:
            # Not subprocess's user=: switching uid in a child forked from a
            # multi-threaded parent (gRPC's threads) crashed now and then.
            argv = ["runuser", "-u", self._user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} {args[-1]} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )

    def _prepare(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self._user is None:
            return
        import pwd
        import stat

        from pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        bin_path = _bin_path()
        ensure_user_exists(self._user)
        ensure_prefix_permissions(self.datadir)
        ensure_prefix_permissions(bin_path)
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bin_path, execute | read)
        ensure_folder_permissions(bin_path.parent / "lib", read)
        entry = pwd.getpwnam(self._user)
        os.chown(self.datadir, entry.pw_uid, entry.pw_gid)
        self.datadir.chmod(0o700)

    def start(self) -> None:
        self._prepare()
        if not (self.datadir / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.datadir), "-U", "postgres",
                "--auth=trust", "--encoding=UTF8", "--no-instructions",
            )  # fmt: skip
        options = " ".join(
            [
                "-h 127.0.0.1",
                f"-p {self.port}",
                f"-k {self.datadir}",
                # durable commits, as in production
                "-c fsync=on",
                "-c synchronous_commit=on",
                "-c max_connections=200",
                "-c shared_buffers=256MB",
            ]
        )
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-o", options,
            "-l", str(self.datadir / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.resume()
        if not (self.datadir / "postmaster.pid").exists():
            return
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")

    def _processes(self) -> list[psutil.Process]:
        pid_file = self.datadir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            main = psutil.Process(pid)
            return [main, *main.children(recursive=True)]
        except (OSError, ValueError, IndexError, psutil.Error):
            return []

    def pause(self) -> None:
        """Freezes the server and its backends: connections hang, nothing fails."""
        for p in self._processes():
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        for p in self._processes():
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGCONT)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(f"postgres on port {self.port} not ready")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
        if self.datadir.parent.name.startswith("payments-pg-"):
            shutil.rmtree(self.datadir.parent, ignore_errors=True)
