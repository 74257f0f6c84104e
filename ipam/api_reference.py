"""Markdown API reference rendered from the service's own OpenAPI document (``ipam openapi``),
so the docs cannot drift from the routes: a test regenerates it and compares."""

from __future__ import annotations

from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")


def _schema_name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"list of {_schema_name(schema.get('items') or {})}"
    return str(schema.get("type", "object"))


def render_markdown(spec: dict[str, Any]) -> str:
    lines = [
        "# API reference",
        "",
        "Generated from `/openapi.json` by `ipam openapi`; do not edit by hand.",
        f"Version {spec.get('info', {}).get('version', '')}.",
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in sorted(spec.get("paths", {}).items()):
        for method in METHODS:
            op = item.get(method)
            if op is not None:
                tag = (op.get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((method.upper(), path, op))
    for tag in sorted(by_tag):
        lines += [f"## {tag}", "", "| method | path | summary | parameters | responses |",
                  "|---|---|---|---|---|"]
        for method, path, op in by_tag[tag]:
            summary = (op.get("summary") or "").replace("|", "\\\\|")
            desc = (op.get("description") or "").strip().splitlines()
            if desc:
                summary = f"{summary}: {desc[0]}" if summary else desc[0]
            params = ", ".join(
                f"`{p['name']}` ({p.get('in')}{', required' if p.get('required') else ''})"
                for p in op.get("parameters", []))
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                params = ", ".join(x for x in (params, f"body: {_schema_name(body['schema'])}")
                                   if x)
            responses = ", ".join(sorted(op.get("responses", {})))
            lines.append(f"| {method} | `{path}` | {summary.replace('|', '/')} | {params} | "
                         f"{responses} |")
        lines.append("")
    return "\n".join(lines)
