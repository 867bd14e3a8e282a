"""Loop tests run on SQLite (the database layer is covered on both in tests/service)."""
