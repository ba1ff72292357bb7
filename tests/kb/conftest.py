"""The store contract's fixtures (both backends), for the knowledge-base store tests."""

from __future__ import annotations

from tests.store.conftest import backend, store

__all__ = ["backend", "store"]
