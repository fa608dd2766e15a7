import os

import pytest
import torch as th

# Two cores on CI: keep each test single-threaded so pytest-xdist workers do not oversubscribe.
th.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: Small, fast settings for runs that only check the machinery, not learning.
TINY = {"n_steps": 64, "batch_size": 32, "n_epochs": 2, "policy_kwargs": {"net_arch": [16]}}


@pytest.fixture
def tiny_kwargs() -> dict:
    return {**TINY, "policy_kwargs": dict(TINY["policy_kwargs"])}
