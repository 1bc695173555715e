"""benchmark/measure.py's per-node counters, from OpenVINO's own ProfilingInfo records."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import openvino as ov

from ovbatch.tasks.benchmark.measure import _counters

Status = ov.ProfilingInfo.Status


def _info(name: str, status: ov.ProfilingInfo.Status, us: int) -> ov.ProfilingInfo:
    info = ov.ProfilingInfo()
    info.node_name, info.node_type, info.exec_type, info.status = name, "Reference", "ref_f32", status
    info.real_time = info.cpu_time = datetime.timedelta(microseconds=us)
    return info


def test_a_node_that_ran_in_any_request_is_executed_and_its_time_averaged() -> None:
    """The CPU plugin gives a node's average per inference in whole microseconds, and reads one
    under 1 us as NOT_RUN with 0 us: a node that shows EXECUTED in one request and NOT_RUN in
    another ran; one NOT_RUN everywhere is reported as the plugin says."""
    requests = [
        SimpleNamespace(profiling_info=[_info("scale", Status.NOT_RUN, 0), _info("mm", Status.EXECUTED, 9)]),
        SimpleNamespace(profiling_info=[_info("scale", Status.EXECUTED, 2), _info("mm", Status.EXECUTED, 3)]),
        SimpleNamespace(profiling_info=[_info("scale", Status.NOT_RUN, 0), _info("idle", Status.NOT_RUN, 0)]),
    ]
    rows = {r["name"]: r for r in _counters(requests, 3)}
    assert rows["scale"]["status"] == "EXECUTED", rows["scale"]
    assert abs(rows["scale"]["real_time_ms"] - 2 / 3 / 1000) < 1e-9, rows["scale"]
    assert abs(rows["mm"]["real_time_ms"] - 12 / 3 / 1000) < 1e-9, rows["mm"]
    assert rows["idle"]["status"] == "NOT_RUN", rows["idle"]
    assert rows["(all nodes)"]["nodes"] == 3
