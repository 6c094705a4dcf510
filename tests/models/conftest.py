import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the temporal/Swin tests: on the shared 2-core CI box a second thread
    only contends (measured 10x slower with 2)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
