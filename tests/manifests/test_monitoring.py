"""Alerts, recording rules and the Grafana dashboard, against the service's real /metrics.

- Every metric a rule or a dashboard panel names is one the running service exports (the real
  app on real PostgreSQL and the fake API server, after a filter and a bind): a renamed metric
  fails here instead of silently emptying a panel or muting an alert.
- ``promtool check rules`` on the rules, and ``promtool test rules`` on input series that must
  fire each alert, and on series that must not.
- docs/metrics.md documents exactly the metrics the service exports.
- The copies for kustomize (manifests/monitoring/) equal the chart's (files/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import SEED_NODES, service_settings
from tests.api.test_extender import post, raw
from tests.conftest import load_fixture
from tests.fakeapi.objects import make_node
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import running_service, wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART_FILES = ROOT / "manifests" / "helm" / "ipam" / "files"
RULES = CHART_FILES / "prometheus-rules.yaml"
DASHBOARD = CHART_FILES / "ipam-dashboard.json"
MONITORING = ROOT / "manifests" / "monitoring"
METRICS_DOC = ROOT / "docs" / "metrics.md"

#: PromQL (and Grafana's label_values) functions, aggregations and keywords the files use.
FUNCTIONS = {"sum", "max", "min", "avg", "count", "rate", "increase", "deriv",
             "histogram_quantile", "predict_linear", "absent", "label_values", "label_replace",
             "clamp_min", "topk"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right"}


# --- reading the files -----------------------------------------------------------------------

def rule_groups() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert isinstance(groups, list)
    return groups


def rules() -> Iterator[dict[str, Any]]:
    for group in rule_groups():
        yield from group["rules"]


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def panel_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    return exprs


def metric_names(expr: str) -> set[str]:
    """The metric (series) names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"label_values\(([^,()]+),\s*\w+\)", r"label_values(\1)", text)  # Grafana
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\boffset\s+\d+[smhdwy]\b", " ", text)  # offset 10m
    # Label lists of by/without/on/ignoring/group_*.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?", text):
        word, call = match.group(0).rstrip("( \t\n"), match.group(1)
        if re.fullmatch(r"\d+[smhdwy]", word) or word in KEYWORDS:
            continue
        if call:
            assert word in FUNCTIONS, f"unknown function {word!r} in {expr!r}"
            continue
        names.add(word)
    return names


def test_the_name_extraction_can_fail() -> None:
    assert metric_names('sum by (pool) (rate(ipam_x_total{a="b"}[5m])) / ipam:y > 0') == {
        "ipam_x_total", "ipam:y"}
    assert metric_names("histogram_quantile(0.99, sum by (verb, le) (rate(m_bucket[5m])))") == {
        "m_bucket"}
    assert metric_names("rate(m_total[6h] offset 10m) > 2") == {"m_total"}


# --- the metrics the service exports ---------------------------------------------------------

@pytest.fixture
async def exported(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
                   ) -> AsyncIterator[set[str]]:
    """Sample names of a scrape after one filter and one bind, and the names the exposition's
    TYPE lines announce (a labelled counter without samples yet is still exported)."""
    for name, ip in SEED_NODES.items():
        fake_apiserver.create("nodes", make_node(name, internal_ip=ip))
    pod = load_fixture("extender/filter-request-nodecache.json")["Pod"]
    fake_apiserver.create("pods", pod)
    async with running_service(service_settings(db_url, fake_apiserver, tmp_path)) as svc:
        await wait_until(lambda: svc.runtime.nodes.synced and len(svc.runtime.nodes) == 3)
        assert (await post(svc, "filter", raw("extender/filter-request-nodecache.json"))
                ).status_code == 200
        assert (await post(svc, "bind", raw("extender/bind-request.json"))).json() == {
            "Error": ""}
        resp = await svc.client.get("/metrics")
        assert resp.status_code == 200
        names: set[str] = set()
        for family in text_string_to_metric_families(resp.text):
            names.update(s.name for s in family.samples)
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                        "gauge": ("",)}.get(family.type, ("",))
            names.update(family.name + s for s in suffixes)
        yield names


def recorded() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


async def test_every_metric_a_rule_uses_is_exported(exported: set[str]) -> None:
    assert {"ipam_pool_addresses", "ipam_extender_request_seconds_bucket",
            "ipam_leader"} <= exported  # the scrape worked
    for rule in rules():
        used = metric_names(rule["expr"])
        assert used, rule
        missing = used - exported - recorded()
        assert not missing, f"{rule.get('alert') or rule.get('record')}: {missing} not exported"


async def test_every_metric_a_panel_uses_is_exported(exported: set[str]) -> None:
    exprs = panel_exprs()
    assert len(exprs) >= 10
    for expr in exprs:
        used = metric_names(expr)
        assert used, expr
        # Raw metrics only: the dashboard works without the recording rules installed.
        assert not used - exported, f"{expr}: {used - exported} not exported"


async def test_metrics_reference_documents_every_exported_metric(exported: set[str]) -> None:
    documented = set(re.findall(r"^\| `(ipam_[a-z_]+)`", METRICS_DOC.read_text(), re.M))
    families = {n for n in exported if n.startswith("ipam_")}
    # A histogram is documented by its base name, a counter by its _total name.
    families = {re.sub(r"_(bucket|count|sum|created)$", "", n) for n in families}
    families = {f"{n}_total" if f"{n}_total" in exported else n for n in families}
    assert documented == families, (documented ^ families)


# --- the rules themselves --------------------------------------------------------------------

def test_rules_have_the_required_alerts_and_readable_annotations() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert {"IpamPoolNearlyFull", "IpamPoolExhausted", "IpamPoolExhaustionPredicted",
            "IpamFilterErrorsRising", "IpamFilterRefusalsRising", "IpamFilterPromisesRefused",
            "IpamBindErrors",
            "IpamExtenderSlow",
            "IpamReconcilerStale", "IpamReconcilerFailing", "IpamBackgroundTaskFailing",
            "IpamPoolConfigRefused", "IpamWatchDown", "IpamLeaderMissing",
            "IpamMultipleLeaders"} == set(alerts)
    assert "predict_linear" in alerts["IpamPoolExhaustionPredicted"]["expr"]
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert name in METRICS_DOC.read_text(), f"{name} is not in docs/metrics.md"


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI: .ci/run installs it (chart_tools)")
        pytest.skip("promtool is not installed: python3 -m tests.manifests.chart_tools DIR")
    return binary


def test_promtool_check_rules() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {sum(1 for _ in rules())} rules found" in out.stdout


def annotations(alert: str, labels: dict[str, str], summary: str) -> dict[str, str]:
    """The expected annotations: the given summary, the description with its labels filled."""
    (rule,) = [r for r in rules() if r.get("alert") == alert]
    description = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)],
                         rule["annotations"]["description"])
    assert "{{" not in description, "the expected description needs more than labels"
    return {"summary": summary, "description": description}


def expect(alert: str, labels: dict[str, str], summary: str) -> dict[str, Any]:
    return {"exp_labels": labels, "exp_annotations": annotations(alert, labels, summary)}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def pool(instance: str, name: str, allocated: str, free: str) -> list[dict[str, str]]:
    common = {"instance": instance, "pool": name, "vlan": "1200"}
    return [series("ipam_pool_addresses", allocated, state="allocated", **common),
            series("ipam_pool_addresses", "0x600", state="kept", **common),
            series("ipam_pool_addresses", "0x600", state="reserved", **common),
            series("ipam_pool_addresses", free, state="free", **common)]


def buckets(verb: str, per_minute: dict[str, int], instance: str = "a") -> list[dict[str, str]]:
    """Cumulative histogram buckets growing by ``per_minute[le]`` observations a minute."""
    out = []
    for le, n in per_minute.items():
        out.append(series("ipam_extender_request_seconds_bucket", f"0+{n}x60", instance=instance,
                          verb=verb, outcome="ok", le=le))
    return out


def unit_tests() -> list[dict[str, Any]]:
    warning, critical = {"severity": "warning"}, {"severity": "critical"}
    return [
        {   # Two replicas report the same counts: p1 95% used fires once, p2 (10%) does not.
            "interval": "1m",
            "input_series": [*pool("a", "p1", "950x30", "50x30"),
                             *pool("b", "p1", "950x30", "50x30"),
                             *pool("a", "p2", "100x30", "900x30")],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "IpamPoolNearlyFull", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "IpamPoolNearlyFull", "exp_alerts": [
                    expect("IpamPoolNearlyFull", {**warning, "pool": "p1"},
                           "Pool p1 is 95% used")]},
                {"eval_time": "15m", "alertname": "IpamPoolExhausted", "exp_alerts": []},
            ],
            "promql_expr_test": [
                {"expr": "ipam:pool_used:ratio", "eval_time": "1m", "exp_samples": [
                    {"labels": 'ipam:pool_used:ratio{pool="p1"}', "value": 0.95},
                    {"labels": 'ipam:pool_used:ratio{pool="p2"}', "value": 0.1}]},
                {"expr": "ipam:pool_free:sum", "eval_time": "1m", "exp_samples": [
                    {"labels": 'ipam:pool_free:sum{pool="p1"}', "value": 50},
                    {"labels": 'ipam:pool_free:sum{pool="p2"}', "value": 900}]},
            ],
        },
        {   # Exhausted.
            "interval": "1m",
            "input_series": pool("a", "p3", "10x30", "0x30"),
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "IpamPoolExhausted", "exp_alerts": [
                    expect("IpamPoolExhausted", {**critical, "pool": "p3"},
                           "Pool p3 has no free address")]},
            ],
        },
        {   # One address a minute leaves the free set: 500 free at 0, 80 at 7 h.
            "interval": "1m",
            "input_series": pool("a", "p4", "500+1x600", "500-1x600")
            + pool("a", "steady", "600x600", "400x600"),
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "IpamPoolExhaustionPredicted",
                 "exp_alerts": []},  # projected to run out, but not for 30 minutes yet
                {"eval_time": "7h", "alertname": "IpamPoolExhaustionPredicted", "exp_alerts": [
                    expect("IpamPoolExhaustionPredicted", {**warning, "pool": "p4"},
                           "Pool p4 will run out within 24 hours at the current rate")]},
            ],
        },
        {   # Filter: 0.1 errors/s fires, the successful calls do not; bind errors too.
            "interval": "1m",
            "input_series": [
                series("ipam_extender_request_seconds_count", "0+6x60", instance="a",
                       verb="filter", outcome="error"),
                series("ipam_extender_request_seconds_count", "0+600x60", instance="a",
                       verb="filter", outcome="ok"),
                series("ipam_extender_request_seconds_count", "0+6x60", instance="a",
                       verb="bind", outcome="error"),
                series("ipam_filter_promises_refused_total", "0+30x60", instance="a",
                       reason="unknown_pod"),
                series("ipam_filter_promises_refused_total", "0+1x60", instance="a",
                       reason="namespace_cap"),
            ],
            "alert_rule_test": [
                {"eval_time": "25m", "alertname": "IpamFilterErrorsRising", "exp_alerts": [
                    expect("IpamFilterErrorsRising", {**warning, "outcome": "error"},
                           "Extender filter fails 100m times per second (error)")]},
                {"eval_time": "10m", "alertname": "IpamFilterPromisesRefused",
                 "exp_alerts": []},
                {"eval_time": "30m", "alertname": "IpamFilterPromisesRefused", "exp_alerts": [
                    expect("IpamFilterPromisesRefused", {**warning, "reason": "unknown_pod"},
                           "Filter refuses 500m promises per second (unknown_pod)")]},
                {"eval_time": "25m", "alertname": "IpamBindErrors", "exp_alerts": [
                    expect("IpamBindErrors", warning,
                           "Extender bind fails 100m times per second")]},
            ],
        },
        {   # Filter refusals by kind, 6 quiet hours then 4 more. waiting_for_terminating_pod runs
            # at 0.1/s throughout: its own baseline, never fires. node_unroutable is new at
            # 6 h (absent before) and kept_address_elsewhere quadruples from 0.05/s: both fire.
            # pod_invalid is new but below 3 a minute. After ~3 h the new levels are the
            # baseline and resolve.
            "interval": "1m",
            "input_series": [
                series("ipam_filter_refusals_total", "0+6x600", instance="a",
                       kind="waiting_for_terminating_pod"),
                series("ipam_filter_refusals_total", "_x360 0+6x240", instance="a",
                       kind="node_unroutable"),
                series("ipam_filter_refusals_total", "0+3x360 1080+12x240", instance="b",
                       kind="kept_address_elsewhere"),
                series("ipam_filter_refusals_total", "_x360 0+1x240", instance="b",
                       kind="pod_invalid"),
            ],
            "alert_rule_test": [
                {"eval_time": "5h", "alertname": "IpamFilterRefusalsRising", "exp_alerts": []},
                # Pending (for: 10m) a few minutes after the rise.
                {"eval_time": "6h8m", "alertname": "IpamFilterRefusalsRising",
                 "exp_alerts": []},
                {"eval_time": "6h30m", "alertname": "IpamFilterRefusalsRising", "exp_alerts": [
                    expect("IpamFilterRefusalsRising",
                           {**warning, "kind": "kept_address_elsewhere"},
                           "Filter holds pods back 200m times per second "
                           "(kept_address_elsewhere)"),
                    expect("IpamFilterRefusalsRising", {**warning, "kind": "node_unroutable"},
                           "Filter holds pods back 100m times per second (node_unroutable)"),
                ]},
                {"eval_time": "9h50m", "alertname": "IpamFilterRefusalsRising",
                 "exp_alerts": []},
            ],
        },
        {   # bind p99 between 2.5 and 5 s: over budget; filter at a few ms: within.
            "interval": "1m",
            "input_series": [
                *buckets("bind", {"0.5": 0, "1": 0, "2.5": 0, "5": 10, "+Inf": 10}),
                *buckets("filter", {"0.005": 100, "0.01": 100, "1": 100, "+Inf": 100}),
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "IpamExtenderSlow", "exp_alerts": [
                    expect("IpamExtenderSlow", {**warning, "verb": "bind"},
                           "Extender bind p99 is 4.975s")]},
            ],
        },
        {   # The leader (a) stopped passing; the follower (b) never passes and is fine.
            "interval": "1m",
            "input_series": [
                series("ipam_leader", "1x60", instance="a"),
                series("ipam_leader", "0x60", instance="b"),
                series("ipam_reconciler_runs_total", "5x60", instance="a"),
                series("ipam_reconciler_runs_total", "0x60", instance="b"),
                series("ipam_watch_up", "1x60", instance="a", resource="pods"),
                series("ipam_watch_up", "0x60", instance="b", resource="nodes"),
            ],
            "alert_rule_test": [
                {"eval_time": "8m", "alertname": "IpamReconcilerStale", "exp_alerts": []},
                {"eval_time": "25m", "alertname": "IpamReconcilerStale", "exp_alerts": [
                    expect("IpamReconcilerStale", {**warning, "instance": "a"},
                           "The ipam reconciler on a completed no pass in 15 minutes")]},
                {"eval_time": "10m", "alertname": "IpamWatchDown", "exp_alerts": [
                    expect("IpamWatchDown", {**warning, "instance": "b", "resource": "nodes"},
                           "ipam's watch of nodes on b is down")]},
                {"eval_time": "25m", "alertname": "IpamLeaderMissing", "exp_alerts": []},
            ],
        },
        {   # The reconciler task fails on a; catalog-refresh fails on b; a refused ConfigMap.
            "interval": "1m",
            "input_series": [
                series("ipam_task_up", "1x5 0x30", instance="a", task="reconciler"),
                series("ipam_task_up", "1x30", instance="b", task="reconciler"),
                series("ipam_task_up", "0x30", instance="b", task="catalog-refresh"),
                series("ipam_task_up", "1x30", instance="a", task="informer-pods"),
                series("ipam_pool_configmap_refusals_total", "0x10 1x20", instance="a",
                       code="INVALID_POOL_CONFIG"),
            ],
            "alert_rule_test": [
                {"eval_time": "12m", "alertname": "IpamReconcilerFailing", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "IpamReconcilerFailing", "exp_alerts": [
                    expect("IpamReconcilerFailing", {**warning, "instance": "a"},
                           "The ipam reconciler on a is failing")]},
                {"eval_time": "20m", "alertname": "IpamBackgroundTaskFailing", "exp_alerts": [
                    expect("IpamBackgroundTaskFailing",
                           {**warning, "instance": "b", "task": "catalog-refresh"},
                           "ipam task catalog-refresh on b is failing")]},
                {"eval_time": "5m", "alertname": "IpamPoolConfigRefused", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "IpamPoolConfigRefused", "exp_alerts": [
                    expect("IpamPoolConfigRefused", {**warning, "code": "INVALID_POOL_CONFIG"},
                           "A pool ConfigMap edit was refused (INVALID_POOL_CONFIG)")]},
            ],
        },
        {   # A leader that passes every 30 s: nothing fires.
            "interval": "30s",
            "input_series": [series("ipam_leader", "1x120", instance="a"),
                             series("ipam_reconciler_runs_total", "0+1x120", instance="a")],
            "alert_rule_test": [
                {"eval_time": "50m", "alertname": "IpamReconcilerStale", "exp_alerts": []},
                {"eval_time": "50m", "alertname": "IpamLeaderMissing", "exp_alerts": []},
                {"eval_time": "50m", "alertname": "IpamMultipleLeaders", "exp_alerts": []},
            ],
        },
        {   # No leader, then two; and a scrape with no ipam_leader at all.
            "interval": "1m",
            "input_series": [series("ipam_leader", "0x10 1x30", instance="a"),
                             series("ipam_leader", "0x10 1x30", instance="b")],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "IpamLeaderMissing", "exp_alerts": [
                    expect("IpamLeaderMissing", critical, "No ipam replica runs the controllers")]},
                {"eval_time": "20m", "alertname": "IpamMultipleLeaders", "exp_alerts": [
                    expect("IpamMultipleLeaders", critical, "2 ipam replicas claim leadership")]},
            ],
        },
        {
            "interval": "1m",
            "input_series": [series("ipam_watch_up", "1x10", instance="a", resource="pods")],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "IpamLeaderMissing", "exp_alerts": [
                    expect("IpamLeaderMissing", critical, "No ipam replica runs the controllers")]},
            ],
        },
    ]


def test_alerts_fire_on_the_series_they_are_written_for(tmp_path: Path) -> None:
    shutil.copyfile(RULES, tmp_path / "rules.yaml")
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": unit_tests()}))
    out = subprocess.run([promtool(), "test", "rules", "tests.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_test_can_fail(tmp_path: Path) -> None:
    """The same harness reports an alert that was expected and did not fire."""
    shutil.copyfile(RULES, tmp_path / "rules.yaml")
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
            "interval": "1m", "input_series": pool("a", "p2", "100x30", "900x30"),
            "alert_rule_test": [{"eval_time": "15m", "alertname": "IpamPoolNearlyFull",
                                 "exp_alerts": [{"exp_labels": {"pool": "p2"}}]}]}]}))
    out = subprocess.run([promtool(), "test", "rules", "tests.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr


# --- the dashboard and the kustomize copies --------------------------------------------------

def test_dashboard_is_importable_and_parameterised() -> None:
    dash = dashboard()
    assert dash["uid"] == "ipam-overview" and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["title"] and panel["description"] and panel["targets"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("pool", "free", "latency", "leader", "reconciler", "watch", "connections"):
        assert topic in titles, topic


def test_kustomize_copies_equal_the_charts() -> None:
    assert (MONITORING / "ipam-dashboard.json").read_bytes() == DASHBOARD.read_bytes()
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_kustomize_renders_the_monitoring_objects() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run([kubectl, "kustomize", str(MONITORING)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    assert set(docs) == {("ServiceMonitor", "ipam"), ("PrometheusRule", "ipam"),
                         ("ConfigMap", "ipam-dashboard")}
    cm = docs["ConfigMap", "ipam-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["ipam.json"]) == dashboard()
    monitor = docs["ServiceMonitor", "ipam"]
    service = yaml.safe_load((ROOT / "manifests" / "service.yaml").read_text())
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
