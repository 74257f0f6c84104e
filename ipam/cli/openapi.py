"""``ipam openapi``: docs/openapi.json and docs/api-reference.md, generated from the app.

tests/e2e/test_docs.py fails when the committed files differ from what this writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def openapi(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for openapi.json and "
                                                           "api-reference.md.")] = Path("docs"),
) -> None:
    """Write the OpenAPI document and a Markdown API reference generated from it."""
    import orjson

    from ipam.api_reference import render_markdown
    from ipam.app import create_app
    from ipam.settings import Settings

    spec = create_app(Settings()).openapi()
    out.mkdir(parents=True, exist_ok=True)
    (out / "openapi.json").write_bytes(
        orjson.dumps(spec, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    (out / "api-reference.md").write_text(render_markdown(spec))
    typer.echo(f"wrote {out / 'openapi.json'} and {out / 'api-reference.md'}")
