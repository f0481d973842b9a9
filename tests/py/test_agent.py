"""Local agent endpoints (/v1/agent) through py-consul.

Services and checks registered on the agent live in its local state and are
synced to the catalog by anti-entropy; the agent views are checked directly,
the catalog/health views are waited for with a deadline.
"""

from __future__ import annotations

import consul

from cairn_testutil import DATACENTER, NODE_NAME, unique, wait_until


def test_agent_self(consul_client):
    info = consul_client.agent.self()
    assert info["Config"]["NodeName"] == NODE_NAME
    assert info["Config"]["Datacenter"] == DATACENTER
    assert info["Member"]["Name"] == NODE_NAME


def test_agent_members(consul_client):
    members = consul_client.agent.members()
    assert len(members) == 1
    member = members[0]
    assert member["Name"] == NODE_NAME
    assert member["Status"] == 1  # serf "alive"


def test_service_register_list_deregister(consul_client):
    name = unique("svc")
    sid = f"{name}-a"
    assert consul_client.agent.service.register(
        name,
        service_id=sid,
        port=8080,
        tags=["alpha", "beta"],
        meta={"version": "1.2.3", "team": "py"},
        check=consul.Check.ttl("60s"),
    )

    services = consul_client.agent.services()
    assert sid in services
    svc = services[sid]
    assert svc["ID"] == sid
    assert svc["Service"] == name
    assert svc["Port"] == 8080
    assert svc["Tags"] == ["alpha", "beta"]
    assert svc["Meta"] == {"version": "1.2.3", "team": "py"}
    # The servers' own "consul" service is a catalog entry, not a local one.
    assert "consul" not in services

    # A single check registered with a service gets the ID "service:<id>"
    # and starts out critical, as TTL checks do.
    check_id = f"service:{sid}"
    checks = consul_client.agent.checks()
    assert check_id in checks
    check = checks[check_id]
    assert check["CheckID"] == check_id
    assert check["ServiceID"] == sid
    assert check["ServiceName"] == name
    assert check["Status"] == "critical"
    assert check["Node"] == NODE_NAME
    assert check["Name"] == f"Service '{name}' check"
    assert check["Type"] == "ttl"

    # Anti-entropy puts the service into the catalog.
    def in_catalog():
        _, instances = consul_client.catalog.service(name)
        return [i for i in instances if i["ServiceID"] == sid]

    [instance] = wait_until(in_catalog, what=f"{sid} in catalog.service({name})")
    assert instance["Node"] == NODE_NAME
    assert instance["ServicePort"] == 8080
    assert instance["ServiceTags"] == ["alpha", "beta"]
    assert instance["ServiceMeta"] == {"version": "1.2.3", "team": "py"}

    assert consul_client.agent.service.deregister(sid) is True
    assert sid not in consul_client.agent.services()
    assert check_id not in consul_client.agent.checks()
    wait_until(lambda: not in_catalog(), what=f"{sid} gone from catalog.service({name})")


def test_ttl_check_pass_warn_fail(consul_client):
    name = unique("ttl")
    sid = f"{name}-a"
    check_id = f"service:{sid}"
    assert consul_client.agent.service.register(name, service_id=sid, port=9090, check=consul.Check.ttl("60s"))
    try:

        def status():
            check = consul_client.agent.checks()[check_id]
            return check["Status"], check["Output"]

        assert status()[0] == "critical"

        assert consul_client.agent.check.ttl_pass(check_id, notes="all good") is True
        assert status() == ("passing", "all good")

        # The new status reaches the health endpoints through anti-entropy.
        def passing_instances():
            _, entries = consul_client.health.service(name, passing=True)
            return [e["Service"]["ID"] for e in entries]

        wait_until(lambda: passing_instances() == [sid], what=f"{sid} passing in health.service")

        assert consul_client.agent.check.ttl_warn(check_id, notes="getting slow") is True
        assert status() == ("warning", "getting slow")

        assert consul_client.agent.check.ttl_fail(check_id, notes="down") is True
        assert status() == ("critical", "down")

        wait_until(lambda: passing_instances() == [], what=f"{sid} no longer passing in health.service")

        def critical_in_health_state():
            _, checks = consul_client.health.state("critical")
            return any(c["CheckID"] == check_id and c["Node"] == NODE_NAME for c in checks)

        wait_until(critical_in_health_state, what=f"{check_id} in health.state(critical)")
    finally:
        consul_client.agent.service.deregister(sid)


def test_node_maintenance_mode(consul_client):
    reason = "pytest maintenance"
    assert consul_client.agent.maintenance(True, reason=reason) is True
    try:
        checks = consul_client.agent.checks()
        assert "_node_maintenance" in checks
        check = checks["_node_maintenance"]
        assert check["Status"] == "critical"
        assert check["Notes"] == reason
        assert check["Name"] == "Node Maintenance Mode"
        assert check["ServiceID"] == ""

        def maintenance_in_health():
            _, node_checks = consul_client.health.node(NODE_NAME)
            return any(c["CheckID"] == "_node_maintenance" and c["Status"] == "critical" for c in node_checks)

        wait_until(maintenance_in_health, what="_node_maintenance in health.node")
    finally:
        assert consul_client.agent.maintenance(False) is True

    assert "_node_maintenance" not in consul_client.agent.checks()
    wait_until(lambda: not maintenance_in_health(), what="_node_maintenance gone from health.node")
