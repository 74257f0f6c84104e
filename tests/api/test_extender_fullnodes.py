"""Full-node filter over real HTTP: the reply's node objects are the request's own bytes
(spliced, not re-encoded), so it must still be the JSON the scheduler sent, node for node,
whatever escapes and characters the objects hold, and bad node lists must still be 400s."""

from __future__ import annotations

import json
from typing import Any

import orjson

from tests.api.test_extender import post, raw, taken
from tests.api.test_extender_wire_decode import tricky_node
from tests.service_harness import RunningService

POD = json.loads(raw("extender/filter-request-fullnodes.json"))["Pod"]


def full_body(items: list[Any], *, indent: bool = False) -> bytes:
    doc = {"Pod": POD, "Nodes": {"metadata": {}, "items": items}, "NodeNames": None}
    if indent:  # not Go's compact form: whitespace and \u escapes must not matter
        return json.dumps(doc, indent=1, ensure_ascii=True).encode()
    return orjson.dumps(doc)


async def test_reply_echoes_passing_nodes_with_escapes_and_unicode(
    service: RunningService,
) -> None:
    routed = tricky_node('gpu-\u00fc-"a"\\b')  # 10.10.100.20: in the pool's routable subnet
    also = tricky_node("\u8282\u70b9-2")
    outside = tricky_node("outside", ip="10.20.0.9")
    no_ip = tricky_node("no-ip", ip=None)
    items = [routed, outside, no_ip, also]
    for indent in (False, True):
        resp = await post(service, "filter", full_body(items, indent=indent))
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
        assert orjson.loads(resp.content) == {
            "Nodes": {"metadata": {}, "items": [routed, also]},
            "NodeNames": None,
            "FailedNodes": {
                "outside": "node 10.20.0.9 is in no routable subnet of any pool",
                "no-ip": "node no-ip has no InternalIP address",
            },
            "FailedAndUnresolvableNodes": None,
            "Error": "",
        }
    assert await taken(service) == []


async def test_every_node_passing_is_the_request_list(service: RunningService) -> None:
    items = [tricky_node(f"n-{i}") for i in range(5)]
    body = full_body(items)
    resp = await post(service, "filter", body)
    assert resp.status_code == 200
    reply = orjson.loads(resp.content)
    assert reply["Nodes"]["items"] == items and reply["FailedNodes"] == {}
    # Spliced as sent: the request's items array appears verbatim in the reply.
    sent = orjson.dumps(items)
    assert sent in resp.content


async def test_unmanaged_pod_echoes_all_nodes(service: RunningService) -> None:
    pod = json.loads(json.dumps(POD))
    for container in pod["spec"]["containers"]:
        container["resources"] = {}
    items = [tricky_node("a"), tricky_node("b", ip=None)]
    body = orjson.dumps({"Pod": pod, "Nodes": {"metadata": {}, "items": items},
                         "NodeNames": None})
    reply = (await post(service, "filter", body)).json()
    assert reply["Nodes"]["items"] == items and reply["FailedNodes"] == {}


async def test_prioritize_reads_full_nodes_the_same_way(service: RunningService) -> None:
    items = [tricky_node('p-"1"'), tricky_node("p-2", ip="10.20.0.9"), tricky_node("p3", ip=None)]
    resp = await post(service, "prioritize", full_body(items))
    assert resp.status_code == 200
    scores = {h["Host"]: h["Score"] for h in resp.json()}
    assert set(scores) == {'p-"1"', "p-2", "p3"}
    assert scores['p-"1"'] > 0 and scores["p-2"] == 0 and scores["p3"] == 0


async def test_bad_node_lists_are_400s_with_the_same_messages(service: RunningService) -> None:
    good = full_body([tricky_node("a")])
    cases = [
        (full_body([tricky_node("a"), {"metadata": {"labels": {}}}]),
         "Nodes.items[1].metadata.name is missing"),
        (orjson.dumps({"Pod": POD, "Nodes": {"items": {"x": [tricky_node("a")]}},
                       "NodeNames": None}),
         "Nodes must be a NodeList object with an items list"),
        (good.replace(b'"kubernetes.io/os":"linux"', b'"kubernetes.io/os":"\xc3("'),
         "body is not valid JSON"),
        (good.replace(b'"kubernetes.io/os":"linux"', b'"kubernetes.io/os":[1,]'),
         "body is not valid JSON"),
    ]
    for body, message in cases:
        resp = await post(service, "filter", body)
        assert resp.status_code == 400, (message, resp.text[:200])
        assert message in resp.json()["Error"]
    assert await taken(service) == []
