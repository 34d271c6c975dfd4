"""What a trained model costs to run, as every run records it: parameters, file size, multiply-
accumulates per image and latency per image, in result.json and the summary."""

from __future__ import annotations

import json
import math

import torch
from helpers import SMOKE, app, train

from sweep.checkpoint import load_checkpoint
from sweep.cost import latency_ms, macs
from sweep.results import CHECKPOINT_FILE


def test_a_run_records_what_its_model_costs(tmp_path):
    _, result = train(tmp_path / "run", *SMOKE, "epochs=1", "model=mlp", "model.hidden=[32]")
    model = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE).model()
    assert result["parameters"] == sum(p.numel() for p in model.parameters()) == (64 * 32 + 32) + (32 * 10 + 10)
    assert result["model_bytes"] == (tmp_path / "run" / CHECKPOINT_FILE).stat().st_size
    assert result["macs"] == 64 * 32 + 32 * 10  # digits are 8x8: two linear layers, one multiply-add a weight
    assert all(math.isfinite(result[k]) and result[k] > 0 for k in ("latency_ms", "latency_ms_b64"))
    assert result["latency_threads"] == torch.get_num_threads()


class Pixels(torch.nn.Module):
    def forward(self, x):
        return x.float()  # raw pixels in, as a checkpoint's model reads them


def test_multiply_accumulates_of_a_convolution_are_counted_as_by_hand():
    net = torch.nn.Sequential(Pixels(), torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 16 * 16, 5))  # fmt: skip
    # each of the 8x16x16 outputs is 3x3x3 multiply-adds; the linear layer one a weight
    assert macs(net, (3, 16, 16)) == 8 * 16 * 16 * 27 + 8 * 16 * 16 * 5


def test_latency_is_per_image_and_a_batch_amortises_it():
    class Slow(torch.nn.Module):
        def probabilities(self, x):
            import time

            time.sleep(0.002)  # a fixed cost a call, whatever the batch
            return x

    assert latency_ms(Slow(), (1, 2, 2), 1) >= 2.0
    assert latency_ms(Slow(), (1, 2, 2), 64) < latency_ms(Slow(), (1, 2, 2), 1) / 10


def test_a_count_is_kept_per_architecture_and_a_forged_one_is_counted_again(tmp_path, monkeypatch):
    """The first count in a process imports torch's compiler stack (a second or more): a run of an
    architecture this machine counted before reads the count instead."""
    import json

    import sweep.cost as cost

    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    _, result = train(tmp_path / "run", *SMOKE, "epochs=1", "model=mlp", "model.hidden=[16]")
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    counted = []
    monkeypatch.setattr(cost, "macs", lambda m, shape: counted.append(shape) or 7)
    assert cost.counted_macs(ckpt.model(), ckpt) == result["macs"] == 64 * 16 + 16 * 10 and counted == []
    [kept] = (tmp_path / "cache" / "macs").glob("*.json")
    kept.write_text(json.dumps(json.loads(kept.read_text()) | {"macs": 1}))
    assert cost.counted_macs(ckpt.model(), ckpt) == 7 and len(counted) == 1


def test_a_sweep_dirs_run_is_picked_by_accuracy_under_a_latency_or_size_limit(tmp_path):
    """The most accurate run whose latency (or best.pt) is within the limit; one line when none is."""
    import pytest

    from sweep.errors import UserError
    from sweep.summary import best_run_dir

    sweep = tmp_path / "s"
    p = app("-m", *SMOKE, "epochs=2", "model=mlp", "model.hidden=[256,256],[8]", f"hydra.sweep.dir={sweep}",
            "hydra.callbacks.summary.report=false", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    results = {n: json.loads((sweep / n / "result.json").read_text()) for n in ("0", "1")}
    printed = p.stdout.split("Summary of 2 runs")[1].splitlines()[1]  # the printed table's header
    assert "latency_ms" in printed.split() and not {"macs", "parameters", "model_bytes"} & set(printed.split())
    fast = min(results, key=lambda n: results[n]["latency_ms"])
    slow = max(results, key=lambda n: results[n]["latency_ms"])
    limit = (results[fast]["latency_ms"] + results[slow]["latency_ms"]) / 2
    run, note = best_run_dir(sweep, max_latency_ms=limit)
    assert run == sweep / fast and f"latency_ms <= {limit:.4g}" in note
    small = min(results, key=lambda n: results[n]["model_bytes"])
    run, note = best_run_dir(sweep, max_bytes=results[small]["model_bytes"])
    assert run == sweep / small and "model_bytes <=" in note
    with pytest.raises(UserError, match=r"--max-latency-ms 1e-09: no completed run of .* is that fast \(the fastest: "):
        best_run_dir(sweep, max_latency_ms=1e-9)


def test_predict_picks_the_best_run_within_a_latency_limit_from_the_command_line(tmp_path):
    from helpers import call

    from sweep import predict

    sweep = tmp_path / "s"
    assert app("-m", *SMOKE, "epochs=1", "model=mlp", "model.hidden=[64],[8]", f"hydra.sweep.dir={sweep}",
               "hydra.callbacks.summary.report=false", cwd=tmp_path).returncode == 0  # fmt: skip
    argv = [str(sweep), str(tmp_path), "--max-latency-ms", "0.000000001"]
    p = call(lambda: predict.main(argv), ["sweep/predict.py"], tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("error: --max-latency-ms 1e-09: no completed run of")
