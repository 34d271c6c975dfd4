"""threads=auto on a busy machine: after each epoch, torch's thread count follows the cores the
other processes leave free (read from /proc/stat), within the run's share of the machine."""

from __future__ import annotations

import pytest
import torch

from sweep import device
from sweep.device import CpuSample, ThreadsFollower, free_threads


@pytest.mark.parametrize(
    "share, cores, others, threads",
    [(2, 2, 0.0, 2), (2, 2, 0.4, 2), (2, 2, 0.6, 1), (2, 2, 1.0, 1), (2, 2, 2.0, 1), (1, 2, 0.0, 1), (4, 4, 1.0, 3),
     (4, 4, 0.2, 4), (2, 8, 3.0, 2)],
)  # fmt: skip
def test_auto_takes_the_cores_the_others_leave_free_within_its_share(share, cores, others, threads):
    assert free_threads(share, cores, others) == threads


def test_the_others_are_the_busy_cores_less_this_process():
    before = CpuSample(wall=100.0, busy=1000.0, own=50.0)
    after = CpuSample(wall=110.0, busy=1025.0, own=60.0)  # 25 core-seconds busy in 10 s, 10 of them ours
    assert after.others_since(before) == pytest.approx(1.5)


def test_the_follower_drops_a_thread_while_another_process_is_busy_and_takes_it_back(monkeypatch):
    samples = iter([
        CpuSample(0.0, 0.0, 0.0),
        CpuSample(10.0, 20.0, 10.0),  # epoch 1: 2 cores busy, 1 of them another process's
        CpuSample(20.0, 40.0, 20.0),  # epoch 2: still
        CpuSample(30.0, 50.0, 30.0),  # epoch 3: only this process
    ])  # fmt: skip
    monkeypatch.setattr(CpuSample, "now", classmethod(lambda cls: next(samples)))
    monkeypatch.setattr(device, "available_cores", lambda: 2)
    torch.set_num_threads(2)
    follower = ThreadsFollower(share=2)
    seen = []
    for _ in range(3):  # before epoch 1 (the load while the data loaded), then after epochs 1 and 2
        follower.follow()
        seen.append(torch.get_num_threads())
    assert seen == [1, 1, 2] and follower.used == [1, 1, 2]


def test_a_fixed_thread_count_is_never_changed(tmp_path):
    from helpers import train

    _, result = train(tmp_path, "+debug=tiny", "threads=1", "epochs=3")
    assert result["threads"] == 1 and result["threads_used"] is None and result["threads_policy"] == "fixed"
    _, result = train(tmp_path / "auto", "+debug=tiny", "epochs=3")
    assert result["threads_policy"].startswith("auto: the free cores")
    assert len(result["threads_used"]) == 3 and all(1 <= t <= result["threads"] for t in result["threads_used"])


@pytest.mark.slow
def test_the_thread_counts_auto_recorded_reproduce_its_metrics(tmp_path, monkeypatch):
    """threads=auto on a busy machine: the run records the count it used, and the same command with
    `threads=` that count gives the same metrics, whatever the load is then."""
    from helpers import metrics_rows, train

    monkeypatch.setattr(device, "free_threads", lambda share, cores, others: 1)  # another process holds a core
    args = ("data=digits", "epochs=3", "seed=3")
    _, auto = train(tmp_path / "auto", *args)
    assert auto["threads_policy"].startswith("auto") and auto["threads_used"] == [1, 1, 1]
    monkeypatch.undo()
    _, fixed = train(tmp_path / "fixed", *args, f"threads={auto['threads_used'][0]}")
    strip = lambda d: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in metrics_rows(d)]
    assert strip(tmp_path / "auto") == strip(tmp_path / "fixed")
    assert fixed["best_val_loss"] == auto["best_val_loss"]


def test_only_the_cores_this_process_may_use_count(monkeypatch):
    """On a node where the job is pinned to 2 of 4 cores, the other cores' load is not its business."""
    import io

    stat = (
        "cpu  400 0 0 400 0 0 0 0 0 0\n"
        "cpu0 100 0 0 0 0 0 0 0 0 0\ncpu1 100 0 0 0 0 0 0 0 0 0\n"
        "cpu2 100 0 0 0 0 0 0 0 0 0\ncpu3 100 0 0 0 0 0 0 0 0 0\nintr 5\n"
    )
    monkeypatch.setattr(device, "open", lambda *a, **k: io.StringIO(stat), raising=False)
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: {0, 2})
    monkeypatch.setattr(device.os, "sysconf", lambda name: 100)
    assert CpuSample.now().busy == 2.0  # cpu0 and cpu2: 100 ticks each, at 100 ticks a second
