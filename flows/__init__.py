"""Prefect flows over the sparft stages: ``pipeline`` (the cached, DVC-consistent pipeline that
``sparft run`` and ``sparft serve`` use) and ``compare`` (strategies x seeds, each in its own
working copy)."""
