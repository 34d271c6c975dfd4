"""What a trained model costs to run, as every run records it: parameters, file size, multiply-
accumulates per image and latency per image, in result.json and the summary."""

from __future__ import annotations

import math

import torch
from helpers import SMOKE, train

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
