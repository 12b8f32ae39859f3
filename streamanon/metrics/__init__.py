"""Clip-level evaluation of an anonymization (``streamanon eval``).

Modules, one job each:

- :mod:`.evaluate` — walks original/anonymized frame pairs and measures every face;
- :mod:`.identity`, :mod:`.landmarks`, :mod:`.lighting`, :mod:`.color`, :mod:`.temporal`
  — the metric formulas (pure NumPy);
- :mod:`.emotion` — the FER2013 expression classifier (torch);
- :mod:`.fid` — Fréchet distances and the FID Inception-v3 loader (torch);
- :mod:`.regions`, :mod:`.stats` — face crops/masks and mean/std aggregation;
- :mod:`.report` — JSON document (schema documented there), console table, HTML;
- :mod:`.cli` — the ``eval`` click command.

Nothing heavy is imported here, so ``import streamanon.metrics`` stays cheap.
"""
