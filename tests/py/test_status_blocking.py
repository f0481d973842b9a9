"""Status endpoints and blocking queries.

A blocking query (?index=N&wait=D) must hold the request until the watched
result's index exceeds N or D (plus up to D/16 of jitter) passes, and then
answer with the current index. Each blocking read runs in its own thread with
its own py-consul client.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from cairn_testutil import unique

# How long a blocking query must stay blocked, while nothing changes, before
# the test concludes that it really blocks (an assertion, not a pause for
# synchronisation: the test is correct whenever the request reaches the agent).
MUST_STILL_BLOCK_AFTER = 0.3


def test_status_leader(consul_client):
    leader = consul_client.status.leader()
    assert isinstance(leader, str)
    assert leader != ""


def test_status_peers(consul_client):
    peers = consul_client.status.peers()
    assert isinstance(peers, list)
    assert len(peers) == 1
    assert peers[0] != ""


@dataclass
class BlockingGet:
    """kv.get(key, index=..., wait=...) running in a thread of its own."""

    agent: object
    key: str
    index: str
    wait: str
    result: tuple | None = None
    error: BaseException | None = None
    started: float = 0.0
    finished: float = 0.0
    thread: threading.Thread = field(init=False)

    def __post_init__(self):
        self.thread = threading.Thread(target=self._run, name=f"blocking-get {self.key}", daemon=True)

    def _run(self):
        client = self.agent.client()
        try:
            self.result = client.kv.get(self.key, index=self.index, wait=self.wait)
        except BaseException as exc:  # reported by the test thread
            self.error = exc
        finally:
            self.finished = time.monotonic()

    def start(self) -> "BlockingGet":
        self.started = time.monotonic()
        self.thread.start()
        return self

    def join(self, timeout: float):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"blocking get on {self.key} still running after {timeout}s"
        if self.error is not None:
            raise self.error
        return self.result


def test_blocking_kv_get_wakes_on_write(agent, consul_client):
    key = f"pytest/{unique('block')}"
    assert consul_client.kv.put(key, "v1") is True
    index, entry = consul_client.kv.get(key)
    assert entry["Value"] == b"v1"

    waiter = BlockingGet(agent, key, index, wait="5s").start()
    waiter.thread.join(MUST_STILL_BLOCK_AFTER)
    assert waiter.thread.is_alive(), (
        f"kv.get(index={index}, wait=5s) returned after {waiter.finished - waiter.started:.3f}s "
        f"with nothing changed: {waiter.result!r} {waiter.error!r}"
    )

    written = time.monotonic()
    assert consul_client.kv.put(key, "v2") is True

    new_index, new_entry = waiter.join(timeout=10)
    woke_after = waiter.finished - written
    assert woke_after < 2.0, f"blocking get returned {woke_after:.3f}s after the write (wait was 5s)"
    assert waiter.finished - waiter.started < 4.5
    assert int(new_index) > int(index)
    assert new_entry["Value"] == b"v2"
    assert new_entry["ModifyIndex"] == int(new_index)


def test_blocking_kv_get_not_woken_by_other_key(agent, consul_client):
    base = f"pytest/{unique('noblock')}"
    key_a, key_b = f"{base}/a", f"{base}/b"
    assert consul_client.kv.put(key_a, "a1") is True
    assert consul_client.kv.put(key_b, "b1") is True
    index, entry = consul_client.kv.get(key_a)
    assert entry["Value"] == b"a1"

    waiter = BlockingGet(agent, key_a, index, wait="1s").start()
    waiter.thread.join(MUST_STILL_BLOCK_AFTER)
    assert waiter.thread.is_alive(), (
        f"kv.get(index={index}, wait=1s) returned after {waiter.finished - waiter.started:.3f}s "
        f"with nothing changed: {waiter.result!r} {waiter.error!r}"
    )

    # Writes elsewhere in the store must not end the query early.
    for i in range(3):
        assert consul_client.kv.put(key_b, f"b{i + 2}") is True
    assert consul_client.kv.put(f"{base}/c", "c1") is True

    same_index, same_entry = waiter.join(timeout=10)
    elapsed = waiter.finished - waiter.started
    # Consul waits the full 1s (plus up to 1/16 of it in jitter) before
    # answering with the unchanged result.
    assert elapsed >= 0.95, f"blocking get on {key_a} returned early, after {elapsed:.3f}s"
    assert elapsed < 3.0, f"blocking get on {key_a} took {elapsed:.3f}s for wait=1s"
    assert int(same_index) == int(index)
    assert same_entry["Value"] == b"a1"


def test_blocking_kv_get_times_out_with_same_index(agent, consul_client):
    key = f"pytest/{unique('timeout')}"
    assert consul_client.kv.put(key, "x") is True
    index, _ = consul_client.kv.get(key)

    waiter = BlockingGet(agent, key, index, wait="1s").start()
    same_index, entry = waiter.join(timeout=10)
    elapsed = waiter.finished - waiter.started
    assert 0.95 <= elapsed < 3.0, f"wait=1s blocking get took {elapsed:.3f}s"
    assert int(same_index) == int(index)
    assert entry["Value"] == b"x"


def test_blocking_with_stale_index_returns_immediately(agent, consul_client):
    key = f"pytest/{unique('stale')}"
    assert consul_client.kv.put(key, "x") is True
    index, _ = consul_client.kv.get(key)
    assert consul_client.kv.put(key, "y") is True

    # The index is already behind the key's ModifyIndex: no blocking at all.
    waiter = BlockingGet(agent, key, index, wait="5s").start()
    new_index, entry = waiter.join(timeout=10)
    assert waiter.finished - waiter.started < 2.0
    assert int(new_index) > int(index)
    assert entry["Value"] == b"y"
