"""The extender's typed decode (msgspec, node objects kept as byte spans of the body) against
the reference: ``orjson.loads`` of the whole body and the dict-walking ``_args_from_doc``.

Every body must give the same pod, the same candidates (name, InternalIP) and node objects
with the same JSON as the reference, or the very same 400 message; and the spliced reply must
decode to what encoding the parsed items gives. No service here: these call the module's
functions on bytes.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipam.api import extender
from ipam.api.extender import WireError
from tests.api.test_extender import raw as fixture
from tests.conftest import load_fixture
from tests.fakeapi.objects import make_node

POD = load_fixture("extender/filter-request-fullnodes.json")["Pod"]
Outcome = tuple[str, Any]


def body(nodes: Any, *, pod: Any = POD, names: Any = None, **extra: Any) -> bytes:
    """ExtenderArgs in Go's field order, as kube-scheduler marshals it."""
    return orjson.dumps({"Pod": pod, "Nodes": nodes, "NodeNames": names, **extra})


def node_list(*items: Any) -> dict[str, Any]:
    return {"metadata": {}, "items": list(items)}


def summary(args: extender._Args) -> dict[str, Any]:
    """What the handler goes on to use, with each node span decoded to compare JSON values."""
    return {
        "pod": args.pod,
        "names": args.names,
        "candidates": args.candidates,
        "items": None if args.spans is None else [orjson.loads(bytes(s)) for s in args.spans],
    }


def reference(raw: bytes) -> Outcome:
    try:
        return "ok", summary(extender._args_from_doc(extender._loads(raw)))
    except WireError as exc:
        return "400", str(exc)


def actual(raw: bytes) -> Outcome:
    try:
        return "ok", summary(extender._args(raw))
    except WireError as exc:
        return "400", str(exc)


def typed(raw: bytes) -> dict[str, Any]:
    """The fast path alone: it must take the body (a failure here means the body silently
    went the slow way and the test would prove nothing about the spans)."""
    return summary(extender._typed_args(raw))


def reference_reply(raw: bytes, passed: list[str], failed: dict[str, str]) -> Any:
    """The reply as the service built it before the typed decode (the parsed items, as
    values: re-encoding them is what failed past 254 levels)."""
    doc = orjson.loads(raw)
    keep = set(passed)
    items = [i for i in doc["Nodes"]["items"] if i["metadata"]["name"] in keep]
    return {"Nodes": {"metadata": {}, "items": items}, "NodeNames": None, "FailedNodes": failed,
            "FailedAndUnresolvableNodes": None, "Error": ""}


def spliced_reply(raw: bytes, passed: list[str], failed: dict[str, str]) -> bytes:
    return bytes(extender._nodes_reply(extender._args(raw), passed, failed, None).body)


def tricky_node(name: str, ip: str | None = "10.10.100.20") -> dict[str, Any]:
    node = make_node(name, internal_ip=ip or "10.10.100.99", labels={
        "quote": 'say "hi"', "backslash": "C:\\dir\\", "slash": "a/b</script>",
        "unicode": "n\u00f6de \u2028 \u00e9\U0001f600", "control": "tab\tnew\nline\u0000",
    }, annotations={"json": '{"nested": ["x", {"y": "\\"z\\""}]}'})
    if ip is None:
        node["status"]["addresses"] = [a for a in node["status"]["addresses"]
                                       if a["type"] != "InternalIP"]
    return node


# -- the fast path takes realistic bodies and agrees with the reference ----------------------
def test_fixture_body_goes_the_fast_way_with_the_reference_result() -> None:
    raw = fixture("extender/filter-request-fullnodes.json")
    assert typed(raw) == reference(raw)[1]
    names = fixture("extender/filter-request-nodecache.json")
    assert typed(names) == reference(names)[1]


def test_escapes_unicode_and_nested_quotes_survive_byte_for_byte() -> None:
    nodes = [tricky_node('n\u00f6de-"q"\\1'), tricky_node("plain-2"),
             tricky_node("no-internal-ip", ip=None)]
    raw = body(node_list(*nodes))
    got = typed(raw)
    assert got == reference(raw)[1]
    assert got["items"] == nodes
    assert [(c.name, str(c.address) if c.address else None) for c in got["candidates"]] == [
        ('n\u00f6de-"q"\\1', "10.10.100.20"), ("plain-2", "10.10.100.20"),
        ("no-internal-ip", None)]
    # The spans are the request's own bytes: each is a slice of the body.
    for span in extender._typed_args(raw).spans or []:
        assert bytes(span) in raw


def test_pretty_printed_and_escaped_input_is_echoed_with_the_same_json() -> None:
    nodes = [tricky_node("a"), tricky_node("b")]
    # ensure_ascii: every non-ASCII character and "/" as \u escapes; indent: whitespace.
    raw = json.dumps({"Pod": POD, "Nodes": node_list(*nodes), "NodeNames": None},
                     indent=2, ensure_ascii=True).replace("/", "\\/").encode()
    assert typed(raw) == reference(raw)[1]
    reply = spliced_reply(raw, ["b"], {"a": "full"})
    assert orjson.loads(reply) == reference_reply(raw, ["b"], {"a": "full"})


def test_filtered_out_and_duplicate_nodes_keep_the_request_order() -> None:
    nodes = [tricky_node(n) for n in ("a", "b", "c", "b", "d")]
    raw = body(node_list(*nodes))
    for passed in (["a", "b", "c", "b", "d"], ["b", "d"], ["d", "a"], [], ["c"]):
        failed = {n["metadata"]["name"]: "no" for n in nodes
                  if n["metadata"]["name"] not in passed}
        reply = spliced_reply(raw, passed, failed)
        assert orjson.loads(reply) == reference_reply(raw, passed, failed), passed
        # Same top-level fields, in Go's order.
        assert list(orjson.loads(reply)) == ["Nodes", "NodeNames", "FailedNodes",
                                             "FailedAndUnresolvableNodes", "Error"]


def test_empty_node_list() -> None:
    raw = body(node_list())
    assert typed(raw) == reference(raw)[1]
    assert orjson.loads(spliced_reply(raw, [], {})) == reference_reply(raw, [], {})


@pytest.mark.parametrize("addresses", [
    [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": "10.0.0.1"}],
    [{"type": "InternalIP", "address": "not-an-ip"}, {"type": "InternalIP", "address": "fd00::1"}],
    [{"type": "ExternalIP", "address": "1.2.3.4"}],
    [{"type": "InternalIP"}],
    [{"address": "10.0.0.1"}],
    [],
    None,
])
def test_internal_ip_rule_matches_the_reference(addresses: Any) -> None:
    node = make_node("n1")
    node["status"]["addresses"] = addresses
    raw = body(node_list(node))
    assert typed(raw) == reference(raw)[1]


def test_duplicate_keys_resolve_as_orjson_does() -> None:
    item = (b'{"metadata":{"name":"first"},"metadata":{"name":"second"},'
            b'"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.1"}]},'
            b'"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.2"}]}}')
    raw = (b'{"Pod":' + orjson.dumps(POD) + b',"Nodes":{"items":[' + item + b']},'
           b'"Nodes":{"metadata":{},"items":[' + item + b']},"NodeNames":null}')
    assert typed(raw) == reference(raw)[1]
    assert typed(raw)["candidates"][0].name == "second"


# -- odd but accepted shapes take the reference way and give its answer ----------------------
@pytest.mark.parametrize("mutate", [
    lambda n: n.update(status="weird"),
    lambda n: n.update(status=None),
    lambda n: n["status"].update(addresses={"type": "InternalIP"}),
    lambda n: n["status"]["addresses"].insert(0, "not an object"),
    lambda n: n["status"]["addresses"].insert(0, {"type": None, "address": 5}),
    lambda n: n["status"]["addresses"].insert(0, {"type": "InternalIP", "address": None}),
    lambda n: n.pop("status"),
])
def test_odd_status_shapes_agree_with_the_reference(mutate: Any) -> None:
    node = make_node("n1", internal_ip="10.10.100.30")
    mutate(node)
    raw = body(node_list(node, make_node("n2")))
    assert actual(raw) == reference(raw)
    assert reference(raw)[0] == "ok"


def test_names_mode_ignores_whatever_nodes_holds() -> None:
    raw = body({"items": "garbage"}, names=["node-0", "node-1"])
    assert actual(raw) == reference(raw) == ("ok", {
        "pod": reference(raw)[1]["pod"], "names": ["node-0", "node-1"], "candidates": None,
        "items": None})


# -- bad bodies: the same 400 message as before ----------------------------------------------
GOOD = body(node_list(make_node("n1")))


@pytest.mark.parametrize(("raw", "message"), [
    (body({"items": {"a": 1}}), "Nodes must be a NodeList object with an items list"),
    (body({"metadata": {}}), "Nodes must be a NodeList object with an items list"),
    (body({"items": None}), "Nodes must be a NodeList object with an items list"),
    (body([make_node("n1")]), "Nodes must be a NodeList object with an items list"),
    (body("nodes"), "Nodes must be a NodeList object with an items list"),
    (body(node_list(make_node("n1"), {"metadata": {}})), "Nodes.items[1].metadata.name is missing"),
    (body(node_list({"metadata": {"name": ""}})), "Nodes.items[0].metadata.name is missing"),
    (body(node_list({"metadata": {"name": 7}})), "Nodes.items[0].metadata.name is missing"),
    (body(node_list({"metadata": None})), "Nodes.items[0].metadata.name is missing"),
    (body(node_list(None)), "Nodes.items[0].metadata.name is missing"),
    (body(node_list("node")), "Nodes.items[0].metadata.name is missing"),
    (body(node_list({"metadata": {"name": "x"}}), pod={"metadata": {}}),
     "Pod: pod.metadata.name is missing"),
    (body({"items": 3}, pod=None), "Pod: pod must be a JSON object"),
    (body(None), "neither NodeNames nor Nodes is set"),
    (body(node_list(make_node("n1")), names="n1"), "NodeNames must be a list of strings or null"),
    (body(node_list(make_node("n1")), names=["n1", 2]),
     "NodeNames must be a list of strings or null"),
    (b"[" + GOOD + b"]", "body must be a JSON object"),
    (b"null", "body must be a JSON object"),
    (GOOD[:-1], "body is not valid JSON"),
    (GOOD + b"x", "body is not valid JSON"),
    # Inside a node object the fast path never reads: still invalid JSON, still refused.
    (GOOD.replace(b'"kubernetes.io/os":"linux"', b'"kubernetes.io/os":linux'),
     "body is not valid JSON"),
    (GOOD.replace(b'"kubernetes.io/os":"linux"', b'"kubernetes.io/os":"li\xffnux"'),
     "body is not valid JSON"),
    (GOOD.replace(b'"kubernetes.io/os":"linux"', b'"kubernetes.io/os":"\xed\xa0\x80"'),
     "body is not valid JSON"),
    (GOOD.replace(b'"kubernetes.io/os":"linux"', b'"kubernetes.io/os":"\\ud800"'),
     "body is not valid JSON"),
    (GOOD.replace(b'"kubernetes.io/os":"linux"', b'"kubernetes.io/os":"a\tb"'),
     "body is not valid JSON"),
    (GOOD.replace(b'"kubernetes.io/os":"linux"', b'"kubernetes.io/os":[1,]'),
     "body is not valid JSON"),
    (GOOD.replace(b'"kubernetes.io/os":"linux"', b'"kubernetes.io/os":NaN'),
     "body is not valid JSON"),
    (GOOD.replace(b'"kubernetes.io/os":"linux"',
                  b'"deep":' + b"[" * 2000 + b"]" * 2000), "body is not valid JSON"),
    (GOOD.replace(b'"name":"n1"', b'"name":"n\xc3"'), "body is not valid JSON"),
    (GOOD.replace(b'"address":"', b'"address":"\xff'), "body is not valid JSON"),
])
def test_bad_bodies_get_the_reference_message(raw: bytes, message: str) -> None:
    assert actual(raw) == reference(raw)
    assert actual(raw)[0] == "400" and message in actual(raw)[1]


@pytest.mark.parametrize("depth", [300, 800])
def test_deep_nesting_in_a_node_is_echoed(depth: int) -> None:
    # Deeper than orjson.dumps goes (254): the reply used to fail with a 500 here.
    raw = GOOD.replace(b'"kubernetes.io/os":"linux"',
                       b'"deep":' + b"[" * depth + b"]" * depth)
    assert typed(raw) == reference(raw)[1]
    # The same node with an odd status takes the reference way, which must echo it too.
    head, _, tail = raw.rpartition(b'"status":{')
    odd = head + b'"status":1,"was":{' + tail
    assert actual(odd) == reference(odd) and actual(odd)[0] == "ok"
    assert orjson.loads(spliced_reply(raw, ["n1"], {})) == reference_reply(raw, ["n1"], {})


def test_nesting_beyond_what_can_be_echoed_is_a_400() -> None:
    # orjson.loads takes up to 1,024 levels; msgspec stops near the interpreter's recursion
    # limit. In between, the body is valid JSON that cannot be echoed: a clear 400, not a 500.
    raw = GOOD.replace(b'"kubernetes.io/os":"linux"',
                       b'"deep":' + b"[" * 1018 + b"]" * 1018)
    assert orjson.loads(raw)
    assert actual(raw) == ("400", "Nodes.items[0] is nested too deeply")


def test_a_utf8_check_spanning_its_chunks() -> None:
    # A multi-byte character across the 1 MiB step of the UTF-8 check, and one bad byte after.
    pad = "x" * ((1 << 20) - 300)
    node = make_node("n1", labels={"pad": pad + "\u00e9\U0001f600" * 50})
    raw = body(node_list(node))
    assert typed(raw) == reference(raw)[1]
    bad = raw.replace("\U0001f600".encode(), b"\xf0\x9f\x98", 1)
    assert actual(bad) == reference(bad)
    assert actual(bad)[0] == "400"


# -- property: random node objects, random mutations ------------------------------------------
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10)
address = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["InternalIP", "ExternalIP", "Hostname"]),
                           "address": st.sampled_from(["10.10.100.7", "fd00::7", "bad", ""])}),
    json_value)
NODE_PATHS = [("metadata",), ("metadata", "name"), ("metadata", "labels"), ("status",),
              ("status", "addresses"), ("spec",), ("spec", "taints"), ("kind",)]


def with_value(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    target = out
    for key in path[:-1]:
        nxt = target.get(key)
        if not isinstance(nxt, dict):
            return out
        target = nxt
    target[path[-1]] = value
    return out


@st.composite
def nodes(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.text(min_size=1, max_size=12))
    node = make_node("x", labels=draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8),
                                                      max_size=3)))
    node["metadata"]["name"] = name
    node["status"]["addresses"] = draw(st.lists(address, max_size=3))
    if draw(st.booleans()):
        node = with_value(node, draw(st.sampled_from(NODE_PATHS)), draw(json_value))
    return node


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(nodes(), max_size=5), pretty=st.booleans(), ascii_only=st.booleans(),
       data=st.data())
def test_random_bodies_agree_with_the_reference(items: list[dict[str, Any]], pretty: bool,
                                                ascii_only: bool, data: st.DataObject) -> None:
    doc = {"Pod": POD, "Nodes": node_list(*items), "NodeNames": None}
    raw = json.dumps(doc, indent=2 if pretty else None, ensure_ascii=ascii_only).encode()
    got, want = actual(raw), reference(raw)
    assert got == want
    if want[0] == "ok":
        names = [c.name for c in want[1]["candidates"]]
        passed = data.draw(st.lists(st.sampled_from(names), unique=True) if names
                           else st.just([]))
        failed = {n: "no" for n in names if n not in passed}
        assert orjson.loads(spliced_reply(raw, passed, failed)) == reference_reply(
            raw, passed, failed)
