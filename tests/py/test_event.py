"""User events through py-consul: fire, list by name, and a blocking list."""

from __future__ import annotations

import threading

from cairn_testutil import unique


def test_event_fire_and_list(consul_client):
    name = unique("evt")
    fired = consul_client.event.fire(name, "payload-1")
    assert fired["Name"] == name and fired["LTime"] == 0
    index, events = consul_client.event.list(name=name)
    assert [e["Name"] for e in events] == [name]
    # py-consul decodes the base64 payload.
    assert events[0]["Payload"] == b"payload-1"
    assert events[0]["LTime"] >= 1
    assert int(index) > 0


def test_event_list_blocks_until_a_new_event(consul_client):
    name = unique("evt")
    consul_client.event.fire(name, "a")
    index, _ = consul_client.event.list(name=name)
    got = {}

    def waiter():
        got["index"], got["events"] = consul_client.event.list(name=name, index=index, wait="30s")

    t = threading.Thread(target=waiter)
    t.start()
    consul_client.event.fire(name, "b")
    t.join(timeout=30)
    assert not t.is_alive()
    assert got["index"] != index
    assert [e["Payload"] for e in got["events"]] == [b"a", b"b"]
