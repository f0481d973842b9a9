"""Transactions through py-consul's Txn API."""

import base64

import consul
import pytest

from cairn_testutil import unique


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_txn_commit_and_rollback(consul_client):
    c = consul_client
    k1, k2 = unique("txn/"), unique("txn/")
    r = c.txn.put([
        {"KV": {"Verb": "set", "Key": k1, "Value": b64("one")}},
        {"KV": {"Verb": "set", "Key": k2, "Value": b64("two")}},
        {"KV": {"Verb": "get", "Key": k1}},
    ])
    assert r["Errors"] is None
    assert base64.b64decode(r["Results"][2]["KV"]["Value"]) == b"one"
    assert c.kv.get(k2)[1]["Value"] == b"two"

    # A failing check rolls the whole transaction back (HTTP 409).
    k3 = unique("txn/")
    with pytest.raises(consul.ConsulException):
        c.txn.put([
            {"KV": {"Verb": "set", "Key": k3, "Value": b64("three")}},
            {"KV": {"Verb": "check-not-exists", "Key": k1}},
        ])
    assert c.kv.get(k3)[1] is None
