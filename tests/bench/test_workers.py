"""structgen/bench/workers.py: tasks in worker processes; hangs, crashes and dead engines become outcomes."""

import time

import pytest

from structgen.bench.workers import EngineUnavailableError, run_tasks

from . import fake_engines as fakes


def _run(tasks, **kw):
    kw.setdefault("timeout_s", 5.0)
    return dict(run_tasks(tasks, setup=fakes.setup_echo, setup_args=("t",), handler=fakes.handle_echo, **kw))


def test_every_task_gets_exactly_one_outcome_in_spite_of_hang_crash_and_exception():
    tasks = [{"value": 1}, {"sleep": 60}, {"value": 2}, {"crash": True}, {"raise": True}, {"value": 3}]
    t0 = time.monotonic()
    out = _run(tasks, timeout_s=2.0)
    elapsed = time.monotonic() - t0
    assert sorted(out) == list(range(len(tasks)))
    assert [out[i].kind for i in range(len(tasks))] == ["result", "timeout", "result", "crash", "crash", "result"]
    assert [out[i].payload["value"] for i in (0, 2, 5)] == [1, 2, 3]
    assert "exit code 5" in out[3].detail
    assert "KeyError" in out[4].detail
    # the hung task cost its limit, not the 60 s it asked for; the run went on after it
    assert elapsed < 45
    # the worker that hung was replaced: results after it come from another process
    assert out[2].payload["pid"] != out[0].payload["pid"]


def test_parallel_jobs_use_several_processes_and_keep_every_result():
    tasks = [{"value": i, "sleep": 0.2} for i in range(6)]
    out = _run(tasks, jobs=2)
    assert sorted(out[i].payload["value"] for i in out) == list(range(6))
    assert len({out[i].payload["pid"] for i in out}) == 2


def test_engine_that_cannot_start_raises_before_running_anything():
    with pytest.raises(EngineUnavailableError, match="no such engine"):
        list(run_tasks([{"value": 1}], setup=fakes.setup_fail, setup_args=("no such engine",),
                       handler=fakes.handle_echo, timeout_s=5))


@pytest.mark.parametrize("kw", [{"timeout_s": 0}, {"timeout_s": 1, "jobs": 0}])
def test_bad_limits_are_refused(kw):
    with pytest.raises(ValueError):
        list(run_tasks([{}], setup=fakes.setup_echo, setup_args=("t",), handler=fakes.handle_echo, **kw))
