"""Shared fixtures: tiny real datasets written by policylab's own writer (no mocks)."""

import pytest

from synthetic import write_synthetic_dataset


@pytest.fixture(params=["v3.0", "v2.1"])
def synthetic_dataset(request, tmp_path):
    root = tmp_path / f"synthetic_{request.param}"
    return root, write_synthetic_dataset(root, codebase_version=request.param)
