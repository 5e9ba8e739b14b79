"""The CPU budget a worker sizes its TensorFlow threads by: affinity, then the container's quota."""

from __future__ import annotations

import os
from pathlib import Path

from shared.host import cpu_quota, usable_cpus


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_no_cgroup_files_means_no_quota_and_every_cpu_of_the_affinity_mask(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path) is None
    assert usable_cpus(tmp_path) == affinity()


def test_cgroup_v2_quota_caps_the_count_rounded_up(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert cpu_quota(tmp_path) == 0.5
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) is None


def test_cgroup_v1_quota_and_unlimited(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    assert cpu_quota(tmp_path) == 1.5
    assert usable_cpus(tmp_path) == min(affinity(), 2)
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(tmp_path) is None


def test_a_quota_above_the_affinity_mask_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text(f"{(affinity() + 8) * 100000} 100000\n")
    assert usable_cpus(tmp_path) == affinity()
