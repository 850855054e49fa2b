import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Fixed thread count: results are bit-identical only for the same count, and tests on a
    # 2-core machine run faster without oversubscription.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
