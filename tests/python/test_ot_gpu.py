"""CUDA arrays of PyTorch and CuPy: used in place through DLPack (no host copy), results returned
on the same framework and device, and the same numbers as the CPU backend. Skipped without a CUDA
build and device (conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

import otcal
from otcal import _otcal

pytestmark = pytest.mark.gpu

N, M, D = 300, 200, 5


def cpu_reference(x, y, **kw):
    geom = otcal.PointCloud(x, y, scale_cost="mean", epsilon=0.05)
    return otcal.sinkhorn(geom, device="cpu", threshold=1e-6, progress=False, **kw)


def test_torch_cuda_inputs_are_used_in_place(rng):
    torch = pytest.importorskip("torch")
    x, y = rng.normal(size=(N, D)), rng.normal(size=(M, D))
    xt = torch.as_tensor(x, device="cuda")
    yt = torch.as_tensor(y, device="cuda")
    assert _otcal.data_address(xt) == xt.data_ptr()  # the view the library reads is the tensor itself
    geom = otcal.PointCloud(xt, yt, scale_cost="mean", epsilon=0.05)
    assert geom.x is xt and geom.y is yt
    out = otcal.sinkhorn(geom, device="cuda", threshold=1e-6, progress=False)
    assert out.device.startswith("cuda")
    for value in (out.f, out.g):
        assert isinstance(value, torch.Tensor) and value.device == xt.device and value.dtype == torch.float64
    ref = cpu_reference(x, y)
    np.testing.assert_allclose(out.f.cpu().numpy(), ref.f, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.g.cpu().numpy(), ref.g, rtol=0, atol=1e-9)

    v = torch.as_tensor(rng.normal(size=(3, N)), device="cuda")
    pushed = out.apply(v, axis=0)
    assert isinstance(pushed, torch.Tensor) and pushed.device == xt.device and pushed.shape == (3, M)
    np.testing.assert_allclose(pushed.cpu().numpy(), ref.apply(v.cpu().numpy(), axis=0), rtol=1e-9, atol=1e-15)
    plan = out.transport_matrix()
    assert isinstance(plan, torch.Tensor) and plan.device == xt.device
    np.testing.assert_allclose(plan.cpu().numpy(), ref.transport_matrix(), rtol=1e-8, atol=1e-300)
    sparse = out.sparsify("min_row")
    np.testing.assert_array_equal(sparse.toarray() != 0, ref.sparsify("min_row").toarray() != 0)


def test_torch_cuda_float32_solves_in_float32(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(N, D)).astype(np.float32)
    xt = torch.as_tensor(x, device="cuda")
    a = torch.as_tensor(rng.uniform(0.5, 1.0, N).astype(np.float32), device="cuda")
    out = otcal.sinkhorn(otcal.PointCloud(xt, scale_cost="mean", epsilon=0.1), a=a, b=a, threshold=1e-4,
                         progress=False)
    assert out.precision == "float32" and out.f.dtype == torch.float32 and out.f.device == xt.device
    np.testing.assert_allclose(out.a, a.cpu().numpy().astype(np.float64), rtol=0, atol=0)


def test_cupy_inputs_are_used_in_place(rng):
    cupy = pytest.importorskip("cupy")
    x, y = rng.normal(size=(N, D)), rng.normal(size=(M, D))
    xc, yc = cupy.asarray(x), cupy.asarray(y)
    assert _otcal.data_address(xc) == xc.data.ptr
    out = otcal.sinkhorn(otcal.PointCloud(xc, yc, scale_cost="mean", epsilon=0.05), threshold=1e-6, progress=False)
    assert isinstance(out.f, cupy.ndarray) and out.f.device.id == xc.device.id
    ref = cpu_reference(x, y)
    np.testing.assert_allclose(cupy.asnumpy(out.f), ref.f, rtol=0, atol=1e-9)
    marginal = out.marginal(0)
    assert isinstance(marginal, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(marginal), ref.marginal(0), rtol=1e-8)


def test_host_inputs_on_a_cuda_context_match_the_cpu(rng):
    x, y = rng.normal(size=(N, D)), rng.normal(size=(M, D))
    geom = otcal.PointCloud(x, y, scale_cost="mean", epsilon=0.05)
    out = otcal.sinkhorn(geom, device="cuda", threshold=1e-6, progress=False)
    ref = cpu_reference(x, y)
    assert isinstance(out.f, np.ndarray)
    np.testing.assert_allclose(out.f, ref.f, rtol=0, atol=1e-9)
    for mode, value in (("threshold", 1e-5), ("mass", 0.9), ("min_row", None)):
        np.testing.assert_array_equal(out.sparsify(mode, value=value).toarray() != 0,
                                      ref.sparsify(mode, value=value).toarray() != 0)
