"""Network coordinates and `near` sorting through py-consul."""

from __future__ import annotations

from cairn_testutil import NODE_NAME, unique


def coord(x):
    return {"Vec": [x, 0, 0, 0, 0, 0, 0, 0], "Error": 0.2, "Adjustment": 0, "Height": 0.00001}


def test_coordinates_and_near(consul_client):
    c = consul_client
    far, near = unique("far"), unique("near")
    for node, addr, x in [(far, "10.1.0.1", 0.05), (near, "10.1.0.2", 0.002)]:
        assert c.catalog.register(node, addr)
        c.coordinate.update(node, coord(x))
    nodes = {e["Node"]: e["Coord"] for e in c.coordinate.nodes()[1]}
    assert nodes[far]["Vec"][0] == 0.05
    assert NODE_NAME in nodes
    assert c.coordinate.node(near)[1][0]["Coord"]["Vec"][0] == 0.002
    assert c.coordinate.datacenters()[0]["Datacenter"] == "dc1"
    _, listed = c.catalog.nodes(near="_agent")
    order = [n["Node"] for n in listed if n["Node"] in (far, near, NODE_NAME)]
    assert order == [NODE_NAME, near, far]
    _, listed = c.catalog.nodes(near=far)
    order = [n["Node"] for n in listed if n["Node"] in (far, near, NODE_NAME)]
    assert order == [far, near, NODE_NAME]
