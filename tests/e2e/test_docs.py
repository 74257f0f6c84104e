"""docs/openapi.json and docs/api-reference.md are what `ipam openapi` generates now; /docs
and /redoc load nothing from outside the service."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ipam.settings import Settings
from tests.service_harness import RunningService, running_service
from tests.system_packages import command

DOCS = Path(__file__).parents[2] / "docs"


def test_api_reference_is_up_to_date(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ipam", "openapi", "-o", str(tmp_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for name in ("openapi.json", "api-reference.md"):
        assert (tmp_path / name).read_text() == (DOCS / name).read_text(), (
            f"docs/{name} is stale: run `ipam openapi -o docs`")


# -- /docs and /redoc offline ---------------------------------------------------------------
class _Refs(HTMLParser):
    """Every URL a page loads or links to: src and href attributes, and url(...) in JS."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data: str) -> None:
        self.scripts.append(data)


@pytest.fixture
async def service(db_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = Settings(database_url=db_url, data_dir=tmp_path, controllers_enabled=False)
    async with running_service(settings) as svc:
        yield svc


@pytest.mark.parametrize(("page", "needs"), [
    ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
    ("/redoc", {"redoc.standalone.js", "favicon.png"}),
])
async def test_docs_pages_load_only_what_the_service_serves(
        service: RunningService, page: str, needs: set[str]) -> None:
    resp = await service.client.get(page)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    refs = _Refs()
    refs.feed(resp.text)
    # Inline scripts name the spec (and for Swagger UI the OAuth2 redirect) by URL too.
    quoted = re.findall(r"""['"`]((?:https?:)?//[^'"`]+|/[\w./-]+)['"`]""",
                        "".join(refs.scripts))
    urls = refs.urls + quoted
    assert {u.rsplit("/", 1)[-1] for u in urls} >= needs, urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from elsewhere"
        fetched = await service.client.get(url)
        assert fetched.status_code == 200, url
        assert fetched.content, url


async def test_docs_assets_are_the_wheels_files(service: RunningService) -> None:
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        resp = await service.client.get(f"/docs-assets/{name}")
        assert resp.content == (files("fastapi_offline") / "static" / name).read_bytes()
    # The wheel's code beside its static files is not served.
    assert (files("fastapi_offline") / "core.py").is_file()
    for path in ("/docs-assets/%2e%2e/core.py", "/docs-assets/..%2fcore.py"):
        assert (await service.client.get(path)).status_code == 404, path


@pytest.mark.parametrize(("page", "rendered"), [
    ("/docs", 'class="opblock'),  # Swagger UI's block of one operation
    ("/redoc", 'data-section-id="tag/'),  # ReDoc's section of one tag
])
async def test_docs_render_in_a_browser_without_internet(
        service: RunningService, page: str, rendered: str) -> None:
    chromium = command("chromium", "chromium")
    proc = await asyncio.create_subprocess_exec(
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        # No name resolves: anything not from the service fails to load.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--virtual-time-budget=30000", "--dump-dom", f"{service.url}{page}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    dom, _ = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert rendered in dom.decode(), dom.decode()[-2000:]
    assert "/v1/pools" in dom.decode()
