import os

import pytest
import torch

# The same thread count as the chapters (hjb.setup): one, unless HJB_THREADS says otherwise.
torch.set_num_threads(int(os.environ.get("HJB_THREADS", "1")))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)
