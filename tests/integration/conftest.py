"""Fixtures of the integration tests: the real PostgreSQL beside SQLite, so every guarantee is proven on both."""

from __future__ import annotations

import pytest

from tests.support.servers import postgres_database


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request):
    """A fresh PostgreSQL database of this test's own, or ``None``: the SQLite file of the embedded default."""
    if request.param == "sqlite":
        yield None
    else:
        with postgres_database() as url:
            yield url
