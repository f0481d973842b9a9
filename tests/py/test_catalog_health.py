"""Catalog (/v1/catalog) and health (/v1/health) endpoints through py-consul.

External nodes are registered straight into the catalog with
catalog.register (no agent behind them), one with a passing service check and
one with a critical one, so the health filters have something to tell apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cairn_testutil import NODE_NAME, unique, wait_until


@dataclass
class ExternalService:
    name: str
    ok_node: str
    bad_node: str
    ok_id: str
    bad_id: str
    ok_check: str
    bad_check: str


@pytest.fixture
def ext(consul_client):
    """Two external nodes providing one service: ok_node's instance has a
    passing check, bad_node's a critical one. Removed again afterwards."""
    name = unique("web")
    svc = ExternalService(
        name=name,
        ok_node=unique("ext-ok"),
        bad_node=unique("ext-bad"),
        ok_id=f"{name}-1",
        bad_id=f"{name}-2",
        ok_check=f"service:{name}-1",
        bad_check=f"service:{name}-2",
    )
    assert consul_client.catalog.register(
        svc.ok_node,
        "127.0.0.21",
        service={"Service": name, "ID": svc.ok_id, "Tags": ["primary", "v1"], "Port": 8001},
        check={
            "Node": svc.ok_node,
            "CheckID": svc.ok_check,
            "Name": "web ok",
            "Status": "passing",
            "ServiceID": svc.ok_id,
        },
    )
    assert consul_client.catalog.register(
        svc.bad_node,
        "127.0.0.22",
        service={"Service": name, "ID": svc.bad_id, "Tags": ["secondary"], "Port": 8002},
        check={
            "Node": svc.bad_node,
            "CheckID": svc.bad_check,
            "Name": "web bad",
            "Status": "critical",
            "Output": "connection refused",
            "ServiceID": svc.bad_id,
        },
    )
    yield svc
    consul_client.catalog.deregister(svc.ok_node)
    consul_client.catalog.deregister(svc.bad_node)


def node_names(nodes):
    return {n["Node"] for n in nodes}


# ---------------------------------------------------------------- catalog


def test_catalog_nodes_include_agent_and_external_nodes(consul_client, ext):
    index, nodes = consul_client.catalog.nodes()
    assert int(index) > 0
    by_name = {n["Node"]: n for n in nodes}
    assert {NODE_NAME, ext.ok_node, ext.bad_node} <= set(by_name)
    assert by_name[ext.ok_node]["Address"] == "127.0.0.21"
    assert by_name[ext.bad_node]["Address"] == "127.0.0.22"


def test_catalog_services_include_consul(consul_client, ext):
    # The servers register themselves as the "consul" service.
    _, services = wait_until(
        lambda: (r := consul_client.catalog.services()) and "consul" in r[1] and r,
        what='"consul" in catalog.services()',
    )
    assert ext.name in services
    assert set(services[ext.name]) == {"primary", "v1", "secondary"}


def test_catalog_service_and_tag_filter(consul_client, ext):
    index, instances = consul_client.catalog.service(ext.name)
    assert int(index) > 0
    by_id = {i["ServiceID"]: i for i in instances}
    assert set(by_id) == {ext.ok_id, ext.bad_id}

    ok = by_id[ext.ok_id]
    assert ok["Node"] == ext.ok_node
    assert ok["Address"] == "127.0.0.21"
    assert ok["ServiceName"] == ext.name
    assert ok["ServicePort"] == 8001
    assert ok["ServiceTags"] == ["primary", "v1"]

    _, tagged = consul_client.catalog.service(ext.name, tag="primary")
    assert [i["ServiceID"] for i in tagged] == [ext.ok_id]

    _, tagged = consul_client.catalog.service(ext.name, tag="secondary")
    assert [i["ServiceID"] for i in tagged] == [ext.bad_id]

    _, tagged = consul_client.catalog.service(ext.name, tag="no-such-tag")
    assert tagged == []


def test_catalog_service_unknown_is_empty_list(consul_client):
    index, instances = consul_client.catalog.service(unique("nosuchservice"))
    assert instances == []
    assert int(index) > 0


def test_catalog_node(consul_client, ext):
    index, data = consul_client.catalog.node(ext.ok_node)
    assert int(index) > 0
    assert data["Node"]["Node"] == ext.ok_node
    assert data["Node"]["Address"] == "127.0.0.21"
    services = data["Services"]
    assert set(services) == {ext.ok_id}
    service = services[ext.ok_id]
    assert service["ID"] == ext.ok_id
    assert service["Service"] == ext.name
    assert service["Tags"] == ["primary", "v1"]
    assert service["Port"] == 8001


def test_catalog_node_of_agent_lists_consul_service(consul_client):
    def consul_on_agent():
        _, data = consul_client.catalog.node(NODE_NAME)
        return data is not None and "consul" in (data.get("Services") or {}) and data

    data = wait_until(consul_on_agent, what=f"service consul on node {NODE_NAME}")
    assert data["Node"]["Node"] == NODE_NAME
    assert data["Services"]["consul"]["Service"] == "consul"


def test_catalog_deregister_service_then_node(consul_client):
    name = unique("dereg")
    node = unique("ext-dereg")
    sid = f"{name}-1"
    check_id = f"service:{sid}"
    assert consul_client.catalog.register(
        node,
        "127.0.0.23",
        service={"Service": name, "ID": sid, "Port": 9000},
        check={"Node": node, "CheckID": check_id, "Name": "c", "Status": "passing", "ServiceID": sid},
    )
    _, instances = consul_client.catalog.service(name)
    assert [i["ServiceID"] for i in instances] == [sid]

    # Removing the service removes its check, but keeps the node.
    assert consul_client.catalog.deregister(node, service_id=sid) is True
    _, instances = consul_client.catalog.service(name)
    assert instances == []
    _, checks = consul_client.health.node(node)
    assert checks == []
    _, nodes = consul_client.catalog.nodes()
    assert node in node_names(nodes)
    _, services = consul_client.catalog.services()
    assert name not in services

    # Removing the node removes it and everything on it.
    assert consul_client.catalog.deregister(node) is True
    _, nodes = consul_client.catalog.nodes()
    assert node not in node_names(nodes)
    _, data = consul_client.catalog.node(node)
    assert data is None


def test_catalog_deregister_single_check(consul_client):
    name = unique("chk")
    node = unique("ext-chk")
    sid = f"{name}-1"
    check_id = f"service:{sid}"
    assert consul_client.catalog.register(
        node,
        "127.0.0.24",
        service={"Service": name, "ID": sid, "Port": 9001},
        check={"Node": node, "CheckID": check_id, "Name": "c", "Status": "critical", "ServiceID": sid},
    )
    try:
        _, checks = consul_client.health.checks(name)
        assert [c["CheckID"] for c in checks] == [check_id]

        assert consul_client.catalog.deregister(node, check_id=check_id) is True
        _, checks = consul_client.health.checks(name)
        assert checks == []
        # The service itself stays, and with no checks it counts as passing.
        _, entries = consul_client.health.service(name, passing=True)
        assert [e["Service"]["ID"] for e in entries] == [sid]
    finally:
        consul_client.catalog.deregister(node)


# ---------------------------------------------------------------- health


def test_health_service_all_and_passing(consul_client, ext):
    index, entries = consul_client.health.service(ext.name)
    assert int(index) > 0
    by_id = {e["Service"]["ID"]: e for e in entries}
    assert set(by_id) == {ext.ok_id, ext.bad_id}
    ok = by_id[ext.ok_id]
    assert ok["Node"]["Node"] == ext.ok_node
    assert ok["Service"]["Service"] == ext.name
    assert ok["Service"]["Port"] == 8001
    assert [(c["CheckID"], c["Status"]) for c in ok["Checks"]] == [(ext.ok_check, "passing")]

    _, entries = consul_client.health.service(ext.name, passing=True)
    assert [e["Service"]["ID"] for e in entries] == [ext.ok_id]

    _, entries = consul_client.health.service(ext.name, tag="secondary")
    assert [e["Service"]["ID"] for e in entries] == [ext.bad_id]


def test_health_checks_for_service(consul_client, ext):
    index, checks = consul_client.health.checks(ext.name)
    assert int(index) > 0
    by_id = {c["CheckID"]: c for c in checks}
    assert set(by_id) == {ext.ok_check, ext.bad_check}
    assert by_id[ext.ok_check]["Status"] == "passing"
    assert by_id[ext.ok_check]["Node"] == ext.ok_node
    assert by_id[ext.ok_check]["ServiceID"] == ext.ok_id
    assert by_id[ext.ok_check]["ServiceName"] == ext.name
    assert by_id[ext.bad_check]["Status"] == "critical"
    assert by_id[ext.bad_check]["Output"] == "connection refused"


def test_health_state(consul_client, ext):
    index, critical = consul_client.health.state("critical")
    assert int(index) > 0
    critical_ids = {(c["Node"], c["CheckID"]) for c in critical}
    assert (ext.bad_node, ext.bad_check) in critical_ids
    assert (ext.ok_node, ext.ok_check) not in critical_ids
    assert all(c["Status"] == "critical" for c in critical)

    _, passing = consul_client.health.state("passing")
    passing_ids = {(c["Node"], c["CheckID"]) for c in passing}
    assert (ext.ok_node, ext.ok_check) in passing_ids
    assert (ext.bad_node, ext.bad_check) not in passing_ids

    _, every = consul_client.health.state("any")
    every_ids = {(c["Node"], c["CheckID"]) for c in every}
    assert {(ext.ok_node, ext.ok_check), (ext.bad_node, ext.bad_check)} <= every_ids


def test_health_node_of_agent_has_passing_serf_health(consul_client):
    def serf_health():
        _, checks = consul_client.health.node(NODE_NAME)
        found = [c for c in checks or [] if c["CheckID"] == "serfHealth"]
        return found and found[0]["Status"] == "passing" and found[0]

    check = wait_until(serf_health, what=f"passing serfHealth on {NODE_NAME}")
    assert check["Node"] == NODE_NAME
    assert check["Name"] == "Serf Health Status"
    assert check["ServiceID"] == ""


def test_health_node_of_external_node(consul_client, ext):
    index, checks = consul_client.health.node(ext.bad_node)
    assert int(index) > 0
    assert [(c["CheckID"], c["Status"]) for c in checks] == [(ext.bad_check, "critical")]
