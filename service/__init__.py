"""labelloop service: FastAPI app, settings, database, API, jobs, CLI."""
