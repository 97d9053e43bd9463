import pytest
import torch

from napari_labeleff import LabelEffError
from napari_labeleff.engine import resolve_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert auto.type == expected


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu", 3, None])
def test_unknown_device(bad):
    with pytest.raises(LabelEffError, match="device=.*allowed"):
        resolve_device(bad)


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_gpu(name):
    with pytest.raises(LabelEffError, match="no CUDA GPU"):
        resolve_device(name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device():
    assert resolve_device("cuda").type == "cuda"
    n = torch.cuda.device_count()
    with pytest.raises(LabelEffError, match="CUDA device"):
        resolve_device(f"cuda:{n}")
