"""Shared fixtures: fresh random inputs (the seed is printed when a test fails) and the gpu marker."""

from __future__ import annotations

import os

import numpy as np
import pytest

import otcal


def _cuda_device_works() -> bool:
    info = otcal.system_info()
    return bool(info["built_with_cuda"]) and len(info["devices"]) > 0


def pytest_collection_modifyitems(config, items):
    if _cuda_device_works():
        return
    skip = pytest.mark.skip(reason="needs a CUDA build of otcal and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def seed(request) -> int:
    """A fresh seed per test (OTCAL_TEST_SEED fixes it to replay a failure)."""
    value = int(os.environ.get("OTCAL_TEST_SEED", "0")) or int.from_bytes(os.urandom(4), "little")
    request.node.user_properties.append(("seed", value))
    return value


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for key, value in item.user_properties:
            if key == "seed":
                report.sections.append(("seed", f"replay with OTCAL_TEST_SEED={value}"))
