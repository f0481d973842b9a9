"""Sessions and locks through py-consul: create, info, list, renew, acquire/release, destroy."""

import consul
import pytest

from cairn_testutil import unique


def test_session_lock_roundtrip(consul_client):
    c = consul_client
    key = unique("lock/")
    s1 = c.session.create(name="first", lock_delay=0, ttl=30)
    s2 = c.session.create(name="second", lock_delay=0, behavior="delete")
    _, info = c.session.info(s1)
    assert info["Name"] == "first"
    assert info["TTL"] == "30s"
    assert {s["ID"] for s in c.session.list()[1]} >= {s1, s2}

    assert c.kv.put(key, "held-by-1", acquire=s1) is True
    assert c.kv.put(key, "held-by-2", acquire=s2) is False
    _, entry = c.kv.get(key)
    assert entry["Session"] == s1
    assert entry["LockIndex"] == 1
    assert entry["Value"] == b"held-by-1"

    assert c.kv.put(key, "bye", release=s1) is True
    assert c.kv.put(key, "held-by-2", acquire=s2) is True
    _, entry = c.kv.get(key)
    assert entry["LockIndex"] == 2

    renewed = c.session.renew(s1)
    assert renewed["ID"] == s1

    # s2 has behavior=delete: destroying it deletes the key it holds.
    assert c.session.destroy(s2) is True
    _, entry = c.kv.get(key)
    assert entry is None
    _, gone = c.session.info(s2)
    assert gone is None
    c.session.destroy(s1)


def test_acquire_with_unknown_session_fails(consul_client):
    with pytest.raises(consul.ConsulException):
        consul_client.kv.put(unique("lock/"), "x", acquire="00000000-0000-0000-0000-000000000000")


def test_renew_unknown_session_is_not_found(consul_client):
    with pytest.raises(consul.NotFound):
        consul_client.session.renew("00000000-0000-0000-0000-000000000000")
