from __future__ import annotations

import pytest

from carbonlink.emissions import FactorLibrary


@pytest.fixture(scope="session")
def lib() -> FactorLibrary:
    return FactorLibrary.builtin()
