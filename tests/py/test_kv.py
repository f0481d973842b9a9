"""KV store (/v1/kv) through py-consul.

py-consul's kv.get returns (index, entry) for a single key, (index, [entries])
with recurse=True, (index, [keys]) with keys=True, and (index, None) when the
key or prefix does not exist (Consul answers 404 with an X-Consul-Index).
Values come back base64-decoded as bytes.
"""

from __future__ import annotations

from cairn_testutil import unique


def kv_prefix(name: str) -> str:
    return f"pytest/{unique(name)}"


def test_put_get_bytes_value(consul_client):
    key = kv_prefix("bytes")
    value = b"\x00\x01\xfe\xffbinary\nvalue"
    assert consul_client.kv.put(key, value) is True

    index, entry = consul_client.kv.get(key)
    assert int(index) > 0
    assert entry["Key"] == key
    assert entry["Value"] == value
    assert entry["Flags"] == 0
    assert entry["LockIndex"] == 0
    assert entry.get("Session") in (None, "")


def test_put_empty_value_reads_back_as_null(consul_client):
    key = kv_prefix("empty")
    assert consul_client.kv.put(key, None) is True
    _, entry = consul_client.kv.get(key)
    assert entry["Key"] == key
    # Consul stores an empty body as an empty value, rendered as "Value": null.
    assert entry["Value"] is None


def test_get_missing_key_returns_none_with_index(consul_client):
    # py-consul raises if a 404 comes without X-Consul-Index, so this also
    # checks that header on the not-found path.
    index, entry = consul_client.kv.get(kv_prefix("missing"))
    assert entry is None
    assert int(index) > 0


def test_flags(consul_client):
    key = kv_prefix("flags")
    assert consul_client.kv.put(key, "v", flags=42) is True
    _, entry = consul_client.kv.get(key)
    assert entry["Flags"] == 42

    # Flags are an unsigned 64-bit value.
    max_u64 = 2**64 - 1
    assert consul_client.kv.put(key, "v", flags=max_u64) is True
    _, entry = consul_client.kv.get(key)
    assert entry["Flags"] == max_u64


def test_index_metadata(consul_client):
    key = kv_prefix("index")
    assert consul_client.kv.put(key, "one") is True
    index1, entry1 = consul_client.kv.get(key)
    assert int(index1) > 0
    assert entry1["CreateIndex"] > 0
    assert entry1["ModifyIndex"] == entry1["CreateIndex"]
    # For a single existing key the query index is the key's ModifyIndex.
    assert int(index1) == entry1["ModifyIndex"]

    assert consul_client.kv.put(key, "two") is True
    index2, entry2 = consul_client.kv.get(key)
    assert entry2["Value"] == b"two"
    assert entry2["CreateIndex"] == entry1["CreateIndex"]
    assert entry2["ModifyIndex"] > entry1["ModifyIndex"]
    assert int(index2) == entry2["ModifyIndex"]
    assert int(index2) > int(index1)


def test_cas_zero_is_create_only(consul_client):
    key = kv_prefix("cas0")
    assert consul_client.kv.put(key, "first", cas=0) is True
    # A second create-only put must fail and leave the value alone.
    assert consul_client.kv.put(key, "second", cas=0) is False
    _, entry = consul_client.kv.get(key)
    assert entry["Value"] == b"first"


def test_cas_mismatch_and_match(consul_client):
    key = kv_prefix("cas")
    assert consul_client.kv.put(key, "v1") is True
    _, entry = consul_client.kv.get(key)
    modify_index = entry["ModifyIndex"]

    assert consul_client.kv.put(key, "stale", cas=modify_index + 1000) is False
    _, entry = consul_client.kv.get(key)
    assert entry["Value"] == b"v1"
    assert entry["ModifyIndex"] == modify_index

    assert consul_client.kv.put(key, "v2", cas=modify_index) is True
    _, entry = consul_client.kv.get(key)
    assert entry["Value"] == b"v2"
    assert entry["ModifyIndex"] > modify_index


def test_recurse(consul_client):
    base = kv_prefix("recurse")
    keys = [f"{base}/a", f"{base}/b/c", f"{base}/b/d"]
    for i, key in enumerate(keys):
        assert consul_client.kv.put(key, f"value-{i}") is True
    # A key that shares the string prefix but not the "directory".
    assert consul_client.kv.put(f"{base}x", "outside") is True

    index, entries = consul_client.kv.get(f"{base}/", recurse=True)
    assert int(index) > 0
    # Entries come back sorted by key.
    assert [e["Key"] for e in entries] == keys
    assert [e["Value"] for e in entries] == [b"value-0", b"value-1", b"value-2"]

    # Recursion is a plain string-prefix match.
    _, entries = consul_client.kv.get(base, recurse=True)
    assert [e["Key"] for e in entries] == keys + [f"{base}x"]

    # Nothing under the prefix: (index, None).
    _, entries = consul_client.kv.get(f"{base}/nothing/", recurse=True)
    assert entries is None


def test_keys_with_and_without_separator(consul_client):
    base = kv_prefix("keys")
    for key in (f"{base}/a", f"{base}/b/c", f"{base}/b/d", f"{base}/e/f/g"):
        assert consul_client.kv.put(key, "x") is True

    _, keys = consul_client.kv.get(f"{base}/", keys=True)
    assert keys == [f"{base}/a", f"{base}/b/c", f"{base}/b/d", f"{base}/e/f/g"]

    # With a separator, keys below the next separator are folded into one
    # entry that ends with the separator.
    _, keys = consul_client.kv.get(f"{base}/", keys=True, separator="/")
    assert keys == [f"{base}/a", f"{base}/b/", f"{base}/e/"]

    _, keys = consul_client.kv.get(f"{base}/b/", keys=True, separator="/")
    assert keys == [f"{base}/b/c", f"{base}/b/d"]


def test_delete_single_key(consul_client):
    key = kv_prefix("delete")
    assert consul_client.kv.put(key, "x") is True
    assert consul_client.kv.delete(key) is True
    _, entry = consul_client.kv.get(key)
    assert entry is None
    # Deleting a missing key still succeeds.
    assert consul_client.kv.delete(key) is True


def test_delete_recurse(consul_client):
    base = kv_prefix("delrec")
    inside = [f"{base}/dir/a", f"{base}/dir/b/c"]
    outside = [f"{base}/dirx", f"{base}/other"]
    for key in inside + outside:
        assert consul_client.kv.put(key, "x") is True

    assert consul_client.kv.delete(f"{base}/dir/", recurse=True) is True

    _, entries = consul_client.kv.get(f"{base}/dir/", recurse=True)
    assert entries is None
    _, entries = consul_client.kv.get(f"{base}/", recurse=True)
    assert [e["Key"] for e in entries] == outside


def test_delete_cas(consul_client):
    key = kv_prefix("delcas")
    assert consul_client.kv.put(key, "x") is True
    _, entry = consul_client.kv.get(key)
    modify_index = entry["ModifyIndex"]

    assert consul_client.kv.delete(key, cas=modify_index + 1000) is False
    _, entry = consul_client.kv.get(key)
    assert entry is not None and entry["Value"] == b"x"

    assert consul_client.kv.delete(key, cas=modify_index) is True
    _, entry = consul_client.kv.get(key)
    assert entry is None
