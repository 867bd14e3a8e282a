"""Tiny colour-group images and project set-up for the grid / review / audit tests.

The helpers live in :mod:`tests.factories` (one copy for every test package); this module
re-exports them for the loop tests that import them from here.
"""

from __future__ import annotations

from tests.factories import COLOURS, colour_png, colour_project, label, run_jobs, start_job, user_id

__all__ = ["COLOURS", "colour_png", "colour_project", "label", "run_jobs", "start_job", "user_id"]
