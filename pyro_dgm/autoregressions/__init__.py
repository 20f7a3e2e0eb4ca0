"""Pixyz's ``pixyz.autoregressions`` package, which is empty in Pixyz 0.3.3 (kept so that its import works)."""

__all__: list[str] = []
