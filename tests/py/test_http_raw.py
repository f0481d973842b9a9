"""Raw HTTP checks with urllib: headers and status codes that a client library
hides or turns into exceptions."""

from __future__ import annotations

import json

from cairn_testutil import raw_request, unique

KV_MAX_VALUE_SIZE = 512 * 1024  # Consul's default kv_max_value_size


def test_query_meta_headers(base_url):
    resp = raw_request(base_url, "GET", "/v1/catalog/nodes")
    assert resp.status == 200
    index = resp.header("X-Consul-Index")
    assert index is not None, resp.headers
    assert int(index) > 0
    assert resp.header("X-Consul-KnownLeader") == "true"
    last_contact = resp.header("X-Consul-LastContact")
    assert last_contact is not None and int(last_contact) >= 0
    assert (resp.header("Content-Type") or "").startswith("application/json")
    assert isinstance(resp.json(), list)


def test_kv_get_index_header_matches_modify_index(base_url):
    key = f"pytest/{unique('rawkv')}"
    put = raw_request(base_url, "PUT", f"/v1/kv/{key}", body=b"hello")
    assert put.status == 200
    assert json.loads(put.body) is True

    resp = raw_request(base_url, "GET", f"/v1/kv/{key}")
    assert resp.status == 200
    [entry] = resp.json()
    assert int(resp.header("X-Consul-Index")) == entry["ModifyIndex"]
    assert resp.header("X-Consul-KnownLeader") == "true"

    raw = raw_request(base_url, "GET", f"/v1/kv/{key}?raw")
    assert raw.status == 200
    assert raw.body == b"hello"


def test_missing_key_is_404_with_index(base_url):
    resp = raw_request(base_url, "GET", f"/v1/kv/pytest/{unique('nokey')}")
    assert resp.status == 404
    index = resp.header("X-Consul-Index")
    assert index is not None and int(index) > 0


def test_method_not_allowed(base_url):
    resp = raw_request(base_url, "DELETE", "/v1/catalog/nodes")
    assert resp.status == 405
    allow = resp.header("Allow") or ""
    assert "GET" in [m.strip() for m in allow.split(",")], allow


def test_bad_filter_expression(base_url):
    # Consul answers a filter parse error with 500 (its evaluator runs behind
    # the RPC layer; hashicorp/consul#7338, #9441). Cairn deliberately answers
    # 400, as the error is the client's, keeping Consul's message prefix and
    # saying where the expression broke.
    resp = raw_request(base_url, "GET", "/v1/catalog/nodes?filter=Node%20%3D%3D")
    assert resp.status == 400, (resp.status, resp.body)
    assert b"Failed to create boolean expression evaluator" in resp.body
    assert b"1:8" in resp.body, resp.body


def test_good_filter_expression(base_url):
    resp = raw_request(base_url, "GET", "/v1/catalog/nodes?filter=Node%20%3D%3D%20%22pytest-node%22")
    assert resp.status == 200
    assert [n["Node"] for n in resp.json()] == ["pytest-node"]


def test_kv_value_size_limit(base_url):
    key = f"pytest/{unique('big')}"
    # Exactly the limit is accepted ...
    resp = raw_request(base_url, "PUT", f"/v1/kv/{key}", body=b"a" * KV_MAX_VALUE_SIZE)
    assert resp.status == 200, resp.body[:200]

    # ... one byte more is refused with 413 and nothing is stored.
    too_big = f"pytest/{unique('toobig')}"
    resp = raw_request(base_url, "PUT", f"/v1/kv/{too_big}", body=b"a" * (KV_MAX_VALUE_SIZE + 1))
    assert resp.status == 413, resp.body[:200]
    assert raw_request(base_url, "GET", f"/v1/kv/{too_big}").status == 404
