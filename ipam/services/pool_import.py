"""galaxy's floatingips config (JSON list or ConfigMap YAML) imported through the API:
applied, or only diffed (``dry_run``)."""

from __future__ import annotations

import asyncio

from ipam.engine.pool_config import PoolConfig, load_document, parse_pool_config
from ipam.errors import InvalidInput
from ipam.services.allocation import Actor
from ipam.services.pool_config import ConfigDiff
from ipam.services.use_case import RuntimeUseCase


class PoolImport(RuntimeUseCase):
    """The pool config replaced through the API (``runtime.pools`` checks and applies)."""

    async def import_pools(self, document: str, *, dry_run: bool, actor: Actor) -> ConfigDiff:
        """galaxy's floatingips (JSON list or ConfigMap YAML) applied, or only diffed."""
        def parse() -> PoolConfig:
            try:
                return parse_pool_config(load_document(document))
            except RecursionError:
                raise InvalidInput("the pool config nests too deeply", field="body") from None

        # Off the event loop: a large YAML document must not stall the extender's filter.
        config = await asyncio.to_thread(parse)
        diff = await self.runtime.pools.apply(config, actor=actor, dry_run=dry_run)
        if not dry_run and not diff.empty:
            await self.runtime.catalog.refresh(self.db)
        return diff
