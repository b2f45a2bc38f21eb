"""Shared fixtures."""
from __future__ import annotations

import dataclasses

import pytest

from offline_bench.data.catalog import CATALOG
from offline_bench.data.collection import ensure_behaviour_recipes


@pytest.fixture
def pending_dataset_id(monkeypatch: pytest.MonkeyPatch) -> str:
    """An id that cannot be collected yet: one whose task still lacks that behaviour policy, or (once every task has
    its policies) halfcheetah-2x3-medium with its policy taken away for this test, as before it was committed."""
    ensure_behaviour_recipes()  # registered once per process: the patch below is not overwritten later
    pending = [e.dataset_id for e in CATALOG.values() if not e.recipe.collectable]
    if pending:
        return pending[0]
    entry = CATALOG["halfcheetah-2x3-medium-v0"]
    monkeypatch.setitem(CATALOG, entry.dataset_id,
                        dataclasses.replace(entry, recipe=dataclasses.replace(entry.recipe, policy=None)))
    assert not CATALOG[entry.dataset_id].recipe.collectable
    return entry.dataset_id
