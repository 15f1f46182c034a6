import math

import pytest
import torch

from loki.host_copy import HostCopy


def test_a_cpu_value_is_ready_at_once_and_detached_from_later_changes():
    t = torch.tensor(2.5, requires_grad=True) * 1
    copy = HostCopy(t)
    assert copy.ready() and copy.value() == 2.5
    assert not copy.tensor().requires_grad and copy.tensor().device.type == "cpu"


def test_none_reads_as_nan():
    copy = HostCopy(None)
    assert copy.ready() and math.isnan(copy.value())


@pytest.mark.gpu
def test_a_gpu_value_lands_in_pinned_memory_without_a_sync():
    value = torch.full((), 3.0, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # a synchronizing call raises
    try:
        copy = HostCopy(value * 2)
        ready = copy.ready()  # polls the event: never blocks
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert copy.host.is_pinned() and isinstance(ready, bool)
    assert copy.value() == 6.0 and copy.ready()
