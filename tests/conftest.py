"""Shared fixtures."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from offline_bench.data.catalog import CATALOG, CatalogEntry
from offline_bench.data.collection import ensure_behaviour_recipes


@pytest.fixture
def pending_entry(monkeypatch: pytest.MonkeyPatch) -> Callable[..., CatalogEntry]:
    """``pick(kind=None)``: a catalog entry (of that recipe kind, if given) that cannot be collected yet: one whose
    task still lacks that behaviour policy, or (once every task has its policies) halfcheetah-2x3's medium or mixed
    entry with its policy taken away for this test, as before those policies were committed."""
    ensure_behaviour_recipes()  # registered once per process: the patch below is not overwritten later

    def pick(kind: str | None = None) -> CatalogEntry:
        pending = [e for e in CATALOG.values() if not e.recipe.collectable and kind in (None, e.recipe.kind)]
        if pending:
            return pending[0]
        entry = CATALOG[f"halfcheetah-2x3-{'mixed' if kind == 'replay-buffer' else 'medium'}-v0"]
        entry = dataclasses.replace(entry, recipe=dataclasses.replace(entry.recipe, policy=None))
        monkeypatch.setitem(CATALOG, entry.dataset_id, entry)
        assert not entry.recipe.collectable
        return entry

    return pick


@pytest.fixture
def pending_dataset_id(pending_entry: Callable[..., CatalogEntry]) -> str:
    """The id of ``pending_entry()``."""
    return pending_entry().dataset_id
