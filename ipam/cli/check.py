"""``ipam check [--repair] [--remote]``: PostgreSQL's addresses against the cluster's pods.

It runs in-process (the database and the API server, no service) because it must work while
the service is down, which is when one wants it most; ``--remote`` prints the running
service's last report instead, as it has no route that runs a pass. The Reconciler is built
here from the runtime's parts.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ipam.cli.connection import api
from ipam.cli.database import with_database
from ipam.cli.exits import fail
from ipam.cli.output import ReportOutput, dump, print_table, spinner


def check(
    ctx: typer.Context,
    repair: Annotated[bool, typer.Option("--repair", help="Apply the repairs.")] = False,
    remote: Annotated[bool, typer.Option(
        "--remote", help="Print the running service's last reconciler report instead.")]
    = False,
    output: Annotated[ReportOutput, typer.Option("-o", "--output", help="table, json or yaml.")]
    = ReportOutput.table,
) -> None:
    """Compare PostgreSQL with the cluster's pods; print what is wrong (and fix it: --repair).

    Runs in-process (IPAM_DATABASE_URL and Kubernetes access needed) so it works while the
    service is down. Exit 0 when nothing was found (or everything found was repaired), 3 when
    problems remain, 4 when the pass could not run.
    """
    if remote and repair:
        fail("--remote prints the service's last report; it cannot --repair (the service "
             "repairs on its own every IPAM_RECONCILER__INTERVAL_SECONDS)")
    if remote:
        with api(ctx) as client, spinner("fetching the service's last reconciler report"):
            report: dict[str, Any] = client.get("/v1/reconciler/report")
    else:
        report = _check_in_process(repair)
    if output is ReportOutput.table:
        _print_report(report, remote=remote)
    else:
        typer.echo(dump(report, output.value))
    if report.get("error"):
        fail(f"the reconciler pass failed: {report['error']}", "UNAVAILABLE")
    open_items = [f for f in report.get("findings") or []
                  if f.get("action") in ("none", "skipped", "conflict")]
    raise typer.Exit(3 if open_items else 0)


def _check_in_process(repair: bool) -> dict[str, Any]:
    from ipam.app import kube_configured, start_runtime
    from ipam.k8s.client import KubeClient
    from ipam.k8s.controllers import build_reconciler
    from ipam.services.reconciler import Report
    from ipam.settings import get_settings

    settings = get_settings()
    if not kube_configured(settings):
        fail("no Kubernetes configuration: set IPAM_KUBECONFIG or IPAM_KUBE_API_URL, or run "
             "in a pod; or use --remote for the running service's last report")

    async def run() -> Report:
        runtime = await start_runtime(settings)
        kube = KubeClient.from_settings(settings)
        try:
            return await build_reconciler(runtime, kube).run_pass(apply=repair)
        finally:
            await kube.aclose()
            await runtime.db.dispose()

    what = "repairing" if repair else "checking"
    with spinner(f"{what}: addresses in PostgreSQL against the cluster's pods"):
        result: dict[str, Any] = with_database(run).to_dict()
    return result


def _print_report(report: dict[str, Any], *, remote: bool) -> None:
    findings: list[dict[str, Any]] = report.get("findings") or []
    mode = "repair" if report.get("applied") else "check (nothing changed)"
    if remote:
        mode = f"service's last pass at {report.get('started_at')}, " + (
            "repairs applied" if report.get("applied") else "nothing changed")
    typer.echo(f"{mode}: {report.get('rows_seen', 0)} addresses, {report.get('pods_seen', 0)} "
               f"pods, {len(findings)} finding(s), {report.get('duration_seconds', 0):.2f}s")
    if findings:
        print_table(findings, [
            ("KIND", lambda f: f.get("kind")), ("ADDRESS", lambda f: f.get("address")),
            ("POD", lambda f: f.get("pod")), ("OWNER", lambda f: f.get("owner")),
            ("ACTION", lambda f: f.get("action")), ("DETAIL", lambda f: f.get("detail"))])
