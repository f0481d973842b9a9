"""Prepared queries through py-consul (which always sends a name_prefix_match template)."""

from cairn_testutil import unique


def test_prepared_query_roundtrip(consul_client):
    c = consul_client
    svc = unique("pq")
    c.agent.service.register(svc, service_id=svc, port=8080, tags=["blue"])
    name = unique("q")
    q = c.query.create(svc, name=name, tags=["blue"])
    qid = q["ID"]
    got = c.query.get(qid)
    assert got[0]["Name"] == name
    assert any(x["ID"] == qid for x in c.query.list())

    # The agent's sync carries the service to the catalog; no health checks: it is healthy.
    import time
    deadline = time.monotonic() + 10
    while True:
        res = c.query.execute(name)
        if res["Nodes"]:
            break
        assert time.monotonic() < deadline, res
        time.sleep(0.05)
    assert res["Service"] == svc
    assert res["Nodes"][0]["Service"]["ID"] == svc
    assert c.query.explain(name)["Query"]["Service"]["Service"] == svc
    c.query.delete(qid)
    c.agent.service.deregister(svc)
