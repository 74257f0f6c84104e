"""Click through the console in Debian's chromium against the real service and real data."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from ipam.services import refusals
from tests.api.rest_conftest import ADMIN, ADMIN_TOKEN, READ_TOKEN
from tests.console.conftest import (
    EDGE_POOL,
    EDGE_REPLICAS,
    LEGACY_IP,
    NETWORKS,
    RESERVED_IP,
    Cluster,
    require_chromium,
)
from tests.fakeapi.objects import make_pod

require_chromium()  # skips (or, with CI=true, fails) the module before selenium is imported

from tests.console.browser import (  # noqa: E402
    all_of,
    one,
    open_page,
    screenshot,
    sign_in,
    wait,
)


def _pool(cluster: Cluster, subnet: str = "10.11.128.0/21") -> dict[str, Any]:
    pools = cluster.http.get("/v1/pools", headers=ADMIN).json()["items"]
    assert [p["subnet"] for p in pools] == ["10.11.128.0/21", EDGE_POOL["subnet"]]
    pool: dict[str, Any] = next(p for p in pools if p["subnet"] == subnet)
    return pool


def _free_address(cluster: Cluster) -> str:
    page = cluster.http.get("/v1/addresses", headers=ADMIN,
                            params={"state": "free", "limit": 1, "subnet": "10.11.129.0/24"})
    address: str = page.json()["items"][0]["address"]
    return address


def test_sign_in_refuses_a_wrong_token_and_shows_the_role(browser: Any, cluster: Cluster
                                                          ) -> None:
    browser.get(f"{cluster.url}/console/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    wait(browser, "#token").send_keys("not-a-token-0123456789")
    one(browser, "#sign-in").click()
    assert "invalid bearer token" in wait(browser, ".signin .notice-error").text
    assert one(browser, "#nav").get_attribute("hidden") is not None
    sign_in(browser, cluster.url, READ_TOKEN)
    assert one(browser, "#role").text.lower() == "read"
    assert one(browser, "#who-name").text == "viewer"
    assert browser.execute_script("return sessionStorage.getItem('ipam.token')") == READ_TOKEN


def test_pool_tree_shows_usage_ranges_node_subnets_and_trend(browser: Any, cluster: Cluster,
                                                             tmp_path: Path) -> None:
    pool = _pool(cluster)
    # 5 pods hold an address, db-2's is kept, the named pool keeps 2, one is reserved.
    assert (pool["allocated"], pool["kept"], pool["reserved"]) == (5, 3, 1)
    sign_in(browser, cluster.url, READ_TOKEN)
    row = wait(browser, f'#pool-tree tr.level-0[data-pool="{pool["name"]}"]')
    assert pool["subnet"] in row.text and "VLAN 1200" in row.text
    assert f"{pool['used']} / {pool['total']:,}" in row.text
    segments = all_of(browser, ".bar .seg", row)
    assert [s.get_attribute("data-state") for s in segments] == ["allocated", "kept", "reserved"]
    rng = one(browser, 'tr[data-range="10.11.128.1~10.11.135.253"]')
    assert "9 / 2,045" in rng.text
    subnet = one(browser, 'tr[data-node-subnet="10.10.100.0/24"]')
    # node-0 and node-1 are in it (node-x is not); the 5 allocated addresses are on them.
    assert "2 nodes route this pool" in subnet.text and "5 allocated on them" in subnet.text
    spark = one(row, "td.trend svg")
    assert spark.get_attribute("aria-label") == "used 0 → 9 (0.4% now)"
    assert one(browser, "#stat-change .stat-value").text == f"+{9 + EDGE_REPLICAS}"
    vlan = one(browser, '#vlan-table tr[data-vlan="1200"]')
    assert pool["name"] in vlan.text
    edge = _pool(cluster, EDGE_POOL["subnet"])
    edge_row = one(browser, f'#pool-tree tr.level-0[data-pool="{edge["name"]}"]')
    assert f"{EDGE_REPLICAS} / 29" in edge_row.text and "76% used" in edge_row.text
    assert "1 node routes this pool" in one(
        browser, 'tr[data-node-subnet="10.10.101.0/24"]').text
    screenshot(browser, "pools", tmp_path)
    # Collapsing a pool hides its ranges; another window asks the service again.
    one(row, "button.toggle").click()
    assert not rng.is_displayed()
    one(browser, '.seg-control a[data-window="7d"]').click()
    wait(browser, "#pool-tree th", text="Trend, 7 days")


def test_address_grid_colours_states_and_shows_holder_and_history(browser: Any,
                                                                  cluster: Cluster,
                                                                  tmp_path: Path) -> None:
    pool = _pool(cluster)
    sign_in(browser, cluster.url, READ_TOKEN, page=f"addresses?pool={pool['name']}")
    cells = wait(browser, "#ip-grid") and all_of(browser, "#ip-grid .cell")
    assert len(cells) == 512
    db0 = cluster.ips["default/db-0"]
    cell = one(browser, f'.cell[data-address="{db0}"]')
    assert cell.get_attribute("data-state") == "allocated"
    assert cell.value_of_css_property("background-color") == "rgba(37, 99, 235, 1)"
    kept = cluster.ips["default/db-2"]
    one(browser, f'.cell[data-address="{kept}"]').click()
    wait(browser, "#detail-address", text=kept)
    detail = one(browser, "#detail")
    wait(browser, "#history")
    for text in ("kept", "sts/default/db/2", "immutable", "no pod holds it"):
        assert text in detail.text, text
    actions = [r.get_attribute("data-action") for r in all_of(browser, "#history li")]
    assert actions == ["keep", "allocate"]
    assert "by scheduler" in one(browser, '#history li[data-action="allocate"]').text
    # Jump to an address on another page: its /24, selected, with the operator's note.
    jump = one(browser, "#jump")
    jump.send_keys(RESERVED_IP)
    one(browser, "#jump-go").click()
    wait(browser, "#detail-address", text=RESERVED_IP)
    wait(browser, "#history")
    assert "licence server, ticket OPS-1432" in one(browser, "#detail").text
    assert one(browser, f'.cell[data-address="{RESERVED_IP}"]').get_attribute("class") \
        == "cell selected"
    assert "reserved/alice" in one(browser, "#detail").text
    assert [r.get_attribute("data-action") for r in all_of(browser, "#history li")] \
        == ["reserve"]
    # The picture for the README: the first page, db-2's kept address and its story.
    open_page(browser, cluster.url, f"addresses?pool={pool['name']}&ip={kept}")
    wait(browser, '#history li[data-action="allocate"]')
    assert "pod default/db-2" in one(browser, "#detail").text
    screenshot(browser, "addresses", tmp_path)


def test_a_read_token_cannot_reserve_or_release(browser: Any, cluster: Cluster) -> None:
    free = _free_address(cluster)
    sign_in(browser, cluster.url, READ_TOKEN, page=f"addresses?ip={free}")
    wait(browser, "#detail-address", text=free)
    assert not one(browser, "#reserve").is_enabled()
    assert "needs an admin token" in one(browser, "#admin-only").text
    # The buttons are only a courtesy: the API itself refuses the console's calls.
    script = """
        const done = arguments[arguments.length - 1];
        import(new URL("api.js", document.baseURI).href).then(async (m) => {
          const out = [];
          for (const call of [() => m.api.reserve(arguments[0], "x"),
                              () => m.api.release(arguments[1], "x", true)]) {
            try { await call(); out.push("changed"); }
            catch (e) { out.push([e.status, e.code]); }
          }
          done(out);
        });"""
    got = browser.execute_async_script(script, free, RESERVED_IP)
    assert got == [[403, "forbidden"], [403, "forbidden"]]
    assert cluster.address(free)["state"] == "free"
    assert cluster.address(RESERVED_IP)["state"] == "reserved"


def test_an_admin_reserves_and_releases_an_address(browser: Any, cluster: Cluster) -> None:
    free = _free_address(cluster)
    sign_in(browser, cluster.url, ADMIN_TOKEN, page=f"addresses?ip={free}")
    assert one(browser, "#role").text.lower() == "admin"
    wait(browser, "#detail-address", text=free)
    one(browser, "#reserve-note").send_keys("held for the payment gateway")
    one(browser, "#reserve").click()
    wait(browser, "#detail .notice-ok", text=f"Reserved {free}")
    wait(browser, f'.cell[data-address="{free}"][data-state="reserved"]')
    row = cluster.address(free)
    assert (row["state"], row["owner"], row["note"]) == ("reserved", "reserved/alice",
                                                         "held for the payment gateway")
    wait(browser, '#history li[data-action="reserve"]', text="operator:alice")
    one(browser, "#release-reason").send_keys("gateway moved")
    one(browser, "#release").click()
    wait(browser, "#detail .notice-ok", text=f"Released {free}")
    wait(browser, f'.cell[data-address="{free}"][data-state="free"]')
    assert cluster.address(free)["state"] == "free"
    wait(browser, '#history li[data-action="release"]', text="gateway moved")


def test_workloads_show_addresses_and_what_their_policy_does(browser: Any, cluster: Cluster,
                                                            tmp_path: Path) -> None:
    sign_in(browser, cluster.url, READ_TOKEN, page="workloads")
    sts = wait(browser, '.workload[data-key="sts/default/db"]')
    for text in ("StatefulSet", "default/db", "policy immutable", "3 replicas", "3 addresses"):
        assert text in sts.text, text
    states = {r.get_attribute("data-address"): one(r, ".badge").text
              for r in all_of(browser, "tbody tr", sts)}
    assert states == {cluster.ips["default/db-0"]: "allocated",
                      cluster.ips["default/db-1"]: "allocated",
                      cluster.ips["default/db-2"]: "kept"}
    outcomes = {one(li, ".event").text: (li.get_attribute("data-keep"), one(li, ".reason").text)
                for li in all_of(browser, ".outcomes li", sts)}
    assert outcomes["scaled down to 2 replicas (ordinal 2 goes)"] == (
        "false", "sts/default/db/2 scaled down to 2 (policy immutable)")
    assert outcomes["StatefulSet default/db is deleted"] == (
        "false", "sts/default/db/2 deleted (policy immutable)")
    web = one(browser, '.workload[data-key="deploy/default/web"]')
    assert "policy never" in web.text and "2 replicas" in web.text
    web_outcomes = {one(li, ".event").text: li.get_attribute("data-keep")
                    for li in all_of(browser, ".outcomes li", web)}
    assert web_outcomes == {"a pod is deleted (its replacement takes a kept address)": "true",
                            "scaled down to 1 replica": "false",
                            "scaled to 0 replicas": "true", "Deployment is deleted": "true"}
    cache = one(browser, '.workload[data-key="pool/cache"]')
    assert "named pool" in cache.text.lower() and "kept for pool cache" in cache.text
    assert not all_of(browser, '.workload[data-key^="pod/"]')  # default policy: not fixed
    screenshot(browser, "workloads", tmp_path)
    # Filtering asks the service.
    kind = one(browser, "#wl-kind")
    kind.find_element("css selector", 'option[value="pool"]').click()
    one(browser, "#workloads").find_element("xpath", "..")  # still on the page
    one(browser, "form.filters button[type=submit]").click()
    wait(browser, '.workload[data-key="pool/cache"]')
    assert len(all_of(browser, ".workload")) == 1


def test_held_back_pods_show_the_filter_reasons(browser: Any, cluster: Cluster,
                                                tmp_path: Path) -> None:
    refusals.RECENT.clear()
    stuck = str(uuid.uuid4())
    refusals.record("shop/checkout-7f9c-abcde", stuck, {
        "node-0": "pool 10.11.128.0/21 exhausted",
        "node-1": "pool 10.11.128.0/21 exhausted",
        "node-x": "node 10.20.0.5 is in no routable subnet of any pool"})
    refusals.record("shop/checkout-7f9c-abcde", stuck, {
        "node-0": "pool 10.11.128.0/21 exhausted",
        "node-1": "pool 10.11.128.0/21 exhausted",
        "node-x": "node 10.20.0.5 is in no routable subnet of any pool"})
    web = cluster.pods["default/web-5d8f7c9b6-x7k2p"]["metadata"]
    refusals.record("default/web-5d8f7c9b6-x7k2p", web["uid"],
                    {"node-x": "node 10.20.0.5 is in no routable subnet of any pool"})
    # And one refused for real: kube-scheduler's filter call with only a node no pool routes.
    pod = cluster.create_pod(make_pod("nightly-export-0", namespace="batch",
                                      annotations={NETWORKS: "galaxy-k8s-vlan"}))
    resp = cluster.http.post("/v1/filter", json={"Pod": pod, "Nodes": None,
                                                 "NodeNames": ["node-x"]})
    assert resp.status_code == 200 and resp.json()["NodeNames"] == [], resp.text
    sign_in(browser, cluster.url, READ_TOKEN, page="refusals")
    real = wait(browser, f'tr[data-uid="{pod["metadata"]["uid"]}"]')
    assert "batch/nightly-export-0" in real.text
    assert "node … is in no routable subnet of any pool (node-x)" in real.text
    held = wait(browser, f'tr[data-uid="{stuck}"]')
    assert held.get_attribute("data-status") == "held back"
    assert "shop/checkout-7f9c-abcde" in held.text
    reasons = [li.text.replace("\n", " ") for li in all_of(browser, ".reasons li", held)]
    assert reasons == ["2 nodes pool 10.11.128.0/21 exhausted (node-0, node-1)",
                       "1 node node … is in no routable subnet of any pool (node-x)"]
    assert one(held, "td.num").text == "2"
    since = one(browser, f'tr[data-uid="{web["uid"]}"]')
    assert since.get_attribute("data-status") == "got an address"
    assert cluster.ips["default/web-5d8f7c9b6-x7k2p"] in since.text
    assert "2 pods held back, 1 got an address since" in one(browser, "#refusal-summary").text
    screenshot(browser, "refusals", tmp_path)


def test_reconciler_report_and_a_dry_run_that_changes_nothing(browser: Any, cluster: Cluster,
                                                              tmp_path: Path) -> None:
    sign_in(browser, cluster.url, READ_TOKEN, page="reconciler")
    last = wait(browser, "#last-report table")
    row = one(last, 'tr[data-kind="missing_resource"]')
    assert "default/no-resource" in row.text
    assert "Repair pass" in one(browser, "#last-report").text
    one(browser, "#run-dry-run").click()
    found = wait(browser, '#dry-run-result tr[data-kind="unknown_to_database"]')
    assert LEGACY_IP in found.text and "default/legacy-0" in found.text
    assert "adopt the address for the running pod" in found.text
    assert "nothing changed" in one(browser, "#dry-run-result .summary").text
    assert cluster.address(LEGACY_IP)["state"] == "free"  # a dry run adopts nothing
    screenshot(browser, "reconciler", tmp_path)


def test_state_colours_come_from_data_and_unknown_states_still_show(browser: Any,
                                                                    cluster: Cluster) -> None:
    """issue 17's `quarantined` (and any later state) is coloured and counted in bars."""
    sign_in(browser, cluster.url, READ_TOKEN)
    script = """
        const done = arguments[arguments.length - 1];
        Promise.all([import(new URL("states.js", document.baseURI).href),
                     import(new URL("ui.js", document.baseURI).href)]).then(([s, ui]) => {
          // A state first seen on a grid cell joins the bars' segments from then on.
          const cooling = s.stateInfo("cooling").color;
          const bar = ui.usageBar({total: 10, used: 4, allocated: 1, quarantined: 2,
                                   cooling: 1});
          done({quarantined: s.stateInfo("quarantined").color, cooling,
                segments: [...bar.children].map((e) => e.dataset.state)});
        });"""
    got = browser.execute_async_script(script)
    assert got["quarantined"] == "#db2777"
    assert got["cooling"].startswith("hsl(")
    assert got["segments"] == ["allocated", "quarantined", "cooling"]


@pytest.mark.parametrize("page", ["pools", "addresses", "workloads", "refusals", "reconciler"])
def test_pages_load_without_console_errors(browser: Any, cluster: Cluster, page: str) -> None:
    browser.get_log("browser")  # drop what earlier tests logged (the read token's 403s)
    sign_in(browser, cluster.url, READ_TOKEN, page=page)
    wait(browser, f"#page-{page} > *")
    assert not all_of(browser, ".notice-error")
    # The unauthenticated whoami before sign-in is a 401 by design.
    logs = [e for e in browser.get_log("browser")
            if e["level"] == "SEVERE" and "status of 401" not in e["message"]]
    assert not logs, logs
