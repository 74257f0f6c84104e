"""schemathesis against our own OpenAPI document: for generated (valid and invalid) requests
to every route, no 5xx, and every response matches the schema the route documents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from tests.api.conftest import SEED_NODES
from tests.api.rest_conftest import ADMIN, rest_settings
from tests.fakeapi.objects import make_node
from tests.fakeapi.server import FakeApiServer
from tests.service_thread import service_in_thread


@pytest.fixture
def api_schema(db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path) -> Iterator[Any]:
    for name, ip in SEED_NODES.items():
        fake_apiserver.create("nodes", make_node(name, internal_ip=ip))
    with service_in_thread(rest_settings(db_url, fake_apiserver, tmp_path)) as svc:
        loaded = schemathesis.openapi.from_dict(httpx.get(f"{svc.url}/openapi.json").json())
        loaded.config.update(base_url=svc.url)
        yield loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case: Any) -> None:
    case.call_and_validate(headers=ADMIN, checks=[not_a_server_error, content_type_conformance,
                                                  response_schema_conformance])
