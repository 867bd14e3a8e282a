"""labelloop's lab: the simulator, the review experiments, the benchmarks and their figures.

Research code kept apart from the product. It drives labelloop only through its domain API
(``service.crud``, ``service.loop``, ``service.jobs.runner``, ``service.models``,
``service.config``, ``service.db``, ``learning``, ``embeddings``), never through the HTTP
routes (``service.api``). ``labelloop simulate`` and ``labelloop simulate-review`` come from
:mod:`lab.cli`; the figures and the commands that made them are in ``lab/RESULTS.md``.
Plots need the ``lab`` extra (matplotlib): ``pip install 'labelloop[lab]'``.
"""
