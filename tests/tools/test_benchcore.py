"""The benchmarks' timing core (spikeforge.cli.benchcore): page faults counted per timed call."""

import mmap
import os

import pytest
import torch

from spikeforge.cli import benchcore as bc

pytestmark = pytest.mark.skipif(bc.minor_faults() is None, reason="the platform does not count page faults")
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"  # Linux: whether anonymous memory gets huge pages


def touch_fresh_pages(nbytes=8 << 20):
    """Writes one byte per 4 KiB page of a fresh anonymous mapping: every page faults on first touch."""
    m = mmap.mmap(-1, nbytes)
    for off in range(0, nbytes, 4096):
        m[off] = 1
    m.close()


def test_timer_counts_the_page_faults_of_a_call():
    timer = bc.Timer(torch.device("cpu"))
    assert timer.faults is None  # nothing timed yet
    timer.once(touch_fresh_pages)
    # 2048 pages of 4 KiB; a kernel that backs the mapping with huge pages faults far fewer times, at least once
    assert timer.faults is not None and timer.faults >= 1
    if os.path.exists(THP_MODE):
        with open(THP_MODE) as f:
            if "[always]" not in f.read():
                assert timer.faults >= 2048


def test_side_by_side_records_faults_per_timed_call():
    timer = bc.Timer(torch.device("cpu"))
    res = bc.side_by_side({"fresh": touch_fresh_pages, "none": lambda: None}, timer, reps=3, warmup=1)
    assert len(res["fresh"].faults) == len(res["fresh"].samples) == 3
    assert res["fresh"].faults_per_call >= 1
    assert res["none"].faults_per_call < res["fresh"].faults_per_call


def test_a_failed_contender_has_no_fault_count():
    def boom():
        raise RuntimeError("no")

    res = bc.side_by_side({"boom": boom}, bc.Timer(torch.device("cpu")), reps=2)
    assert res["boom"].error and res["boom"].faults_per_call is None


def test_error_text_says_which_package_a_contender_needs():
    """A contender whose peer lacks a package said "failed: ModuleNotFoundError: No module named 'torchvision'"."""
    from spikeforge.cli.benchcore import error_text

    try:
        import torchvision_is_not_installed_here  # noqa: F401
    except ModuleNotFoundError as e:
        assert (
            error_text(e) == "needs torchvision_is_not_installed_here (pip install torchvision_is_not_installed_here)"
        )
    assert error_text(ValueError("first\nsecond")) == "ValueError: first"
