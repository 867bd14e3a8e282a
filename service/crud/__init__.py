"""Domain operations called by routes, the CLI and jobs (keyword-only functions)."""
