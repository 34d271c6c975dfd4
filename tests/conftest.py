"""Fixtures every test gets; the helpers tests import are in tests/helpers.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py and tests/formats.py


@pytest.fixture(autouse=True)
def _quiet_torch_threads():
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)  # a run turns it on; hypothesis's float strategies need denormals
