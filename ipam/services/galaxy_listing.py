"""galaxy's ``GET /v1/ip``: one page of taken addresses, filtered, sorted and counted by
PostgreSQL (``AddressQuery.galaxy_page``) instead of loading every taken row per request."""

from __future__ import annotations

from ipam.services.runtime import Runtime
from ipam.storage.address_query import AddressQuery, GalaxyFilter, GalaxyPage


async def galaxy_page(runtime: Runtime, flt: GalaxyFilter, order: str, offset: int,
                      limit: int) -> GalaxyPage:
    """Rows ``offset`` (at most the total) to ``offset + limit``, and the total; one statement,
    so the page and the count come from the same snapshot."""
    async with runtime.db.single_statement() as store:
        return await AddressQuery(store.sql).galaxy_page(flt, order, offset, limit)
