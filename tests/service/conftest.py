"""Database tests run on SQLite always and on PostgreSQL where configured."""

import pytest

from tests.conftest import DB_PARAMS


@pytest.fixture(params=DB_PARAMS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
