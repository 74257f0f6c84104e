"""``/metrics`` keeps answering when the pool-usage query fails in an unexpected way (a table
missing after a bad restore, a half-applied migration): the task and watch metrics matter most
exactly then."""

from __future__ import annotations

from sqlalchemy import text

from tests.api.test_metrics import samples
from tests.service_harness import RunningService


async def test_metrics_answer_when_the_usage_query_breaks(service: RunningService) -> None:
    async with service.runtime.db.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE ranges RENAME TO ranges_gone"))
    try:
        resp = await service.client.get("/metrics")
        assert resp.status_code == 200, resp.text
        names = {name for name, _ in samples(resp.text)}
        assert any(n.startswith("ipam_task_up") for n in names), sorted(names)[:20]
    finally:
        async with service.runtime.db.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE ranges_gone RENAME TO ranges"))
