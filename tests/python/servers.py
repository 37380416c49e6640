"""Starts what the differential suite compares: a real `mlflow server` (the reference) and the
subjects, `runlog serve` and a `runlog:///` store that MLflow's client opens in-process
through the package's plugin. Each lives in its own temporary directory; the servers listen on
a free loopback port and are stopped when the context exits. Shared by the pytest fixtures and
bench_client.py, so both measure and compare the same configurations.
"""

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 180  # mlflow's first start runs its sqlite migrations; a busy 2-core box is slow
LISTEN_LINE = re.compile(r"(?:https?://)?(\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9a-fA-F:]+\]):(\d+)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runlog_binary():
    """RUNLOG_BIN, else the debug binary `cargo build` leaves in the target directory."""
    explicit = os.environ.get("RUNLOG_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "runlog"


def _wait_healthy(url, proc, log_path):
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; log {log_path}:\n{_tail(log_path)}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url}/health did not answer in {STARTUP_SECONDS}s; log {log_path}:\n{_tail(log_path)}")


def _tail(path, lines=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _server_env():
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    return env


@contextlib.contextmanager
def mlflow_server(workdir=None):
    """`mlflow server` over sqlite with proxied artifacts, as the issue's reference."""
    with tempfile.TemporaryDirectory(prefix="mlflow-ref-", dir=workdir) as tmp:
        port = free_port()
        log_path = Path(tmp) / "server.log"
        mlflow_exe = Path(sys.executable).parent / "mlflow"
        cmd = [
            str(mlflow_exe), "server",
            "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
            "--serve-artifacts", "--artifacts-destination", f"{tmp}/artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env=_server_env())
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc, log_path)
            yield url
        finally:
            _stop(proc)


def _read_listen_port(proc, log_path, seen):
    """Copies the child's output to its log and records the first `host:port` it prints."""
    with open(log_path, "wb") as log:
        for raw in proc.stdout:
            log.write(raw)
            log.flush()
            if "port" not in seen:
                m = LISTEN_LINE.search(raw.decode("utf-8", "replace"))
                if m:
                    seen["port"] = int(m.group(2))
                    seen["event"].set()
    seen["event"].set()


@contextlib.contextmanager
def runlog_server(workdir=None, extra_args=()):
    """`runlog serve --port 0` over a fresh store; the port is read from its listen line."""
    binary = runlog_binary()
    if not binary.is_file():
        raise RuntimeError(f"no runlog binary at {binary}: run `cargo build` or set RUNLOG_BIN")
    with tempfile.TemporaryDirectory(prefix="runlog-sub-", dir=workdir) as tmp:
        log_path = Path(tmp) / "server.log"
        cmd = [str(binary), "--store", f"{tmp}/store", "serve", "--host", "127.0.0.1", "--port", "0", *extra_args]
        proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_server_env())
        seen = {"event": threading.Event()}
        reader = threading.Thread(target=_read_listen_port, args=(proc, log_path, seen), daemon=True)
        reader.start()
        try:
            seen["event"].wait(STARTUP_SECONDS)
            if "port" not in seen:
                _stop(proc)
                raise RuntimeError(f"runlog serve printed no listen line; log {log_path}:\n{_tail(log_path)}")
            url = f"http://127.0.0.1:{seen['port']}"
            _wait_healthy(url, proc, log_path)
            yield url
        finally:
            _stop(proc)
            reader.join(timeout=5)


@contextlib.contextmanager
def runlog_uri(workdir=None):
    """A `runlog:///` tracking URI over a fresh store, for MLflow's client in this process.

    Fails rather than skips when the package is missing: the in-process target is part of the
    contract (tests/python/run.sh installs the package into the suite's venv).
    """
    try:
        import runlog.mlflow_store  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            f"the runlog package is not importable from {sys.executable} ({e}); "
            "install it with `maturin develop` in python/ (tests/python/run.sh does)"
        ) from e
    with tempfile.TemporaryDirectory(prefix="runlog-uri-", dir=workdir) as tmp:
        yield f"runlog://{tmp}/store"


# The sides under test, by the name their tests carry in pytest's ids.
SUBJECTS = ["runlog-serve", "runlog-uri"]


def subject(name, workdir=None):
    """One side under test by name (SUBJECTS). RUNLOG_PYTEST_SUBJECT=mlflow replaces
    `runlog serve` with a second mlflow server, which checks the harness and the normalizer
    alone."""
    if name == "runlog-uri":
        return runlog_uri(workdir)
    if os.environ.get("RUNLOG_PYTEST_SUBJECT", "runlog") == "mlflow":
        return mlflow_server(workdir)
    return runlog_server(workdir)
