"""Session fixtures: one `cairn agent -dev` for the whole test session.

The agent binary is taken from $CAIRN_BIN (default: target/debug/cairn under
the repository root, two directories above this file). It is started with a
free HTTP port on 127.0.0.1 and every other listener disabled, and the tests
talk to it with py-consul (`consul_client` fixture, or `agent.client()` for a
client of one's own) or raw urllib (`base_url`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import consul
import pytest

from cairn_testutil import NODE_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]

STARTUP_DEADLINE = 20.0  # seconds for the agent to serve a leader
SHUTDOWN_DEADLINE = 10.0  # seconds for the agent to exit after SIGTERM
POLL_INTERVAL = 0.05

# py-consul reads CONSUL_HTTP_TOKEN even when host and port are given; the dev
# agent runs without ACLs, so a token from the calling shell must not leak in.
os.environ.pop("CONSUL_HTTP_TOKEN", None)

# requests (under py-consul) honours *_proxy variables; never send loopback
# traffic through a proxy.
for _var in ("NO_PROXY", "no_proxy"):
    _current = os.environ.get(_var, "")
    os.environ[_var] = ",".join(x for x in (_current, "127.0.0.1", "localhost") if x)

# A urllib opener that ignores any *_proxy environment variables.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Agent:
    """The running agent under test."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> consul.Consul:
        """A new py-consul client for this agent (one per thread: a client's
        requests session should not be shared between threads)."""
        return consul.Consul(host="127.0.0.1", port=self.port, scheme="http")

    def log_tail(self, max_bytes: int = 8000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        return data[-max_bytes:].decode("utf-8", "replace")


def _cairn_bin() -> Path:
    env = os.environ.get("CAIRN_BIN")
    if not env:
        return REPO_ROOT / "target" / "debug" / "cairn"
    path = Path(env)
    if path.is_absolute() or path.exists():
        return path.resolve()
    # A relative $CAIRN_BIN that does not exist from the current directory is
    # taken relative to the repository root, like the default.
    return REPO_ROOT / path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _leader(base_url: str) -> str | None:
    """The leader reported by GET /v1/status/leader, or None if not (yet) served."""
    try:
        with _OPENER.open(base_url + "/v1/status/leader", timeout=2) as resp:
            if resp.status != 200:
                return None
            value = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return value if isinstance(value, str) and value else None


@pytest.fixture(scope="session")
def agent(tmp_path_factory) -> Agent:
    binary = _cairn_bin()
    if not binary.is_file():
        pytest.fail(f"cairn binary not found at {binary} (build it, or set CAIRN_BIN)", pytrace=False)

    workdir = tmp_path_factory.mktemp("cairn-agent")
    log_path = workdir / "agent.log"
    port = _free_port()
    cmd = [
        str(binary),
        "agent",
        "-dev",
        f"-http-port={port}",
        "-dns-port=-1",
        "-grpc-port=-1",
        "-serf-lan-port=-1",
        "-serf-wan-port=-1",
        "-server-port=-1",
        f"-node={NODE_NAME}",
    ]
    # Keep CONSUL_* variables of the calling shell away from the agent.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    running = Agent(process=process, port=port, log_path=log_path)

    problem = _wait_for_leader(running)
    if problem is not None:
        _kill(process)
        pytest.fail(
            f"{problem}\ncommand: {' '.join(cmd)}\nlog ({log_path}):\n{running.log_tail()}",
            pytrace=False,
        )

    try:
        yield running
    finally:
        _stop(running)


def _wait_for_leader(running: Agent) -> str | None:
    """Poll until the agent reports a leader; return a problem description if it
    exits or the deadline passes first."""
    deadline = time.monotonic() + STARTUP_DEADLINE
    while _leader(running.base_url) is None:
        if running.process.poll() is not None:
            return f"cairn agent exited with code {running.process.returncode} before reporting a leader"
        if time.monotonic() >= deadline:
            return f"cairn agent did not report a leader on /v1/status/leader within {STARTUP_DEADLINE}s"
        time.sleep(POLL_INTERVAL)
    return None


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=SHUTDOWN_DEADLINE)


def _stop(running: Agent) -> None:
    process = running.process
    if process.poll() is not None:
        pytest.fail(
            f"cairn agent died during the session (exit code {process.returncode})\n"
            f"log ({running.log_path}):\n{running.log_tail()}",
            pytrace=False,
        )
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=SHUTDOWN_DEADLINE)
        honoured_sigterm = True
    except subprocess.TimeoutExpired:
        honoured_sigterm = False
        process.kill()
        process.wait(timeout=SHUTDOWN_DEADLINE)
    assert process.returncode is not None, "cairn agent is still running after SIGKILL"
    if not honoured_sigterm:
        pytest.fail(
            f"cairn agent did not exit within {SHUTDOWN_DEADLINE}s of SIGTERM and was killed\n"
            f"log ({running.log_path}):\n{running.log_tail()}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def consul_client(agent: Agent) -> consul.Consul:
    """A py-consul client bound to the agent under test (main thread only;
    threads make their own with agent.client())."""
    return agent.client()


@pytest.fixture(scope="session")
def base_url(agent: Agent) -> str:
    """http://127.0.0.1:<port> of the agent, for raw urllib requests."""
    return agent.base_url
