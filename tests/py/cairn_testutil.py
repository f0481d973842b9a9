"""Small helpers shared by the end-to-end tests (imported by the test modules).

Nothing here sleeps as a means of synchronisation: `wait_until` polls a
condition until it holds or a deadline passes, and raw HTTP helpers never
follow proxies, so requests always go straight to the agent on loopback.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

# The agent is started with -node=pytest-node; -dev implies datacenter dc1.
NODE_NAME = "pytest-node"
DATACENTER = "dc1"

# Polling interval for wait_until; a pause between polls, not a synchronisation.
POLL_INTERVAL = 0.05

# Default deadline for conditions that depend on the agent's own asynchronous
# work (leader reconcile, anti-entropy sync to the catalog).
DEFAULT_DEADLINE = 10.0


def unique(prefix: str) -> str:
    """A name unique to one test, made only of characters Consul allows in KV keys
    and service/node names (letters, digits and '-')."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_until(condition, timeout: float = DEFAULT_DEADLINE, what: str = "condition"):
    """Call `condition()` until it returns a truthy value, and return that value.

    Fails the test with the last value/exception seen if `timeout` seconds pass
    first.
    """
    deadline = time.monotonic() + timeout
    last = None
    last_exc: BaseException | None = None
    while True:
        try:
            last = condition()
            last_exc = None
            if last:
                return last
        except AssertionError as exc:  # a condition may use asserts
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"last exception: {last_exc!r}" if last_exc else f"last value: {last!r}"
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; {detail}")
        time.sleep(POLL_INTERVAL)


# A urllib opener that ignores any *_proxy environment variables.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        # HTTP header names are case-insensitive.
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def json(self):
        return json.loads(self.body)


def raw_request(
    base_url: str, method: str, path: str, body: bytes | None = None, timeout: float = 30.0
) -> RawResponse:
    """Send one request with urllib and return status, headers and body, for
    both success and HTTP error statuses."""
    req = urllib.request.Request(base_url + path, data=body, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return RawResponse(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return RawResponse(err.code, dict(err.headers.items()), err.read())
