"""torchvision classifiers as a model kind (`model=torchvision`): weights from a state-dict file
(tests save a torchvision model's own randomly initialised one: no download here) or torchvision's
cache, a frozen backbone that stays bit-identical and is computed once for a sweep, fine-tuning
at the backbone's own lr scale, and the trained model used by predict, export and load_model."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torchvision
from formats import write_colours
from helpers import TINY, app, train

from sweep.checkpoint import load_checkpoint, load_model
from sweep.errors import UserError

FOLDER = ("data=folder", "data.channels=3", "data.size=[32,32]", "epochs=3", "patience=5")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_colours(root / "photos")
    weights = root / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)  # random, in the file format torchvision's are
    return root / "photos", weights


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))


def _tv(root, weights, *more):
    return (*FOLDER, f"data.root={root}", "model=torchvision", "model.name=resnet18", f"model.weights={weights}", *more)


@pytest.mark.slow
@pytest.mark.parametrize("augment", ["none", "flip_crop"], ids=["cached-features", "augmented"])
def test_a_frozen_backbone_is_the_files_bit_for_bit_and_only_the_head_learns(tmp_path, photos, augment):
    from sweep.backbones import TorchvisionNet

    root, weights = photos
    frozen = _tv(root, weights, "model.freeze=backbone", f"augment={augment}", "lr=1e-2", "epochs=6")
    _, result = train(tmp_path / "r", *frozen)
    assert result["status"] == "completed" and result["best_val_acc"] > 0.8  # chance is 1/3
    assert result["normalization"].startswith("imagenet (a state-dict file carries no normalisation")
    state = load_checkpoint(tmp_path / "r").state_dict
    original = torch.load(weights, weights_only=True)
    for key, tensor in original.items():
        if not key.startswith("fc."):  # batch-norm statistics included: a frozen backbone's stay frozen
            assert torch.equal(state[f"backbone.{key}"], tensor), key
    torch.manual_seed(0)  # the run's seed: the head as it was before training
    untrained = TorchvisionNet((3, 32, 32), 3, name="resnet18", freeze="backbone")
    assert not torch.equal(state["head.1.weight"], untrained.head[1].weight)


@pytest.mark.slow
def test_frozen_features_are_computed_once_and_again_when_the_data_changes(tmp_path, photos, caplog):
    import shutil

    root, weights = photos
    mine = tmp_path / "photos"
    shutil.copytree(root, mine)
    caplog.set_level(logging.INFO, logger="sweep")

    def features_line(run: str, *more: str) -> str:
        caplog.clear()
        train(tmp_path / run, *_tv(mine, weights, "model.freeze=backbone", *more))
        return next(r.getMessage() for r in caplog.records if r.getMessage().startswith("features:"))

    assert features_line("a").startswith("features: computing resnet18's output for 90 images")
    assert "read from the cache" in features_line("b", "lr=1e-2", "optimizer=sgd")  # a head setting: a hit
    from sweep.data import _seal

    [cache] = (tmp_path / "cache" / "features").rglob("features-resnet18-*.pt")  # made another backbone's
    stored = torch.load(cache, weights_only=True)
    stored["tensors"] = {k: v[:, :7] for k, v in stored["tensors"].items()}
    torch.save(stored | {"checksum": _seal(stored["tensors"])}, cache)
    assert features_line("b2").startswith("features: computing")  # not a shape error on every attempt
    assert any(str(cache) in r.getMessage() and "features are (" in r.getMessage() for r in caplog.records)
    from PIL import Image

    Image.new("RGB", (32, 32), (255, 255, 255)).save(mine / "red" / "0.png")  # one image changed
    assert features_line("c").startswith("features: computing")


def test_the_backbone_trains_at_its_own_lr_scale_and_a_frozen_one_not_at_all():
    from sweep.backbones import TorchvisionNet
    from sweep.train import LoopState, Schedule, Settings

    settings = Settings(batch_size=8, epochs=1, patience=1, min_delta=0.0, seed=0)
    schedule = Schedule(lambda o: torch.optim.lr_scheduler.ConstantLR(o, 1.0, 0))
    for freeze, lrs in (("none", [0.1, 0.1 * 0.25]), ("backbone", [0.1])):
        net = TorchvisionNet((3, 32, 32), 5, name="mobilenet_v3_small", freeze=freeze, backbone_lr_scale=0.25)
        for make in (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), lambda p: torch.optim.Adagrad(p, lr=0.1)):
            state = LoopState.start(net, make, schedule, settings)
            assert [g["lr"] for g in state.optimizer.param_groups] == pytest.approx(lrs)
            trained = {id(p) for g in state.optimizer.param_groups for p in g["params"]}
            assert trained == {id(p) for p in net.parameters() if p.requires_grad}
    assert not any(p.requires_grad for p in net.backbone.parameters())
    net.train()
    assert net.head.training and not net.backbone.training  # its batch norms keep their statistics


@pytest.mark.slow
def test_a_small_torchvision_model_learns_and_predicts_exports_and_loads(tmp_path, photos):
    import onnxruntime

    from sweep.export import export
    from sweep.images import read_image

    root, _ = photos
    _, result = train(tmp_path / "r", *FOLDER, f"data.root={root}", "data.size=[16,16]", "model=torchvision",
                      "model.name=resnet18", "epochs=4", "batch_size=16", "lr=1e-3", "precision=fp32")  # fmt: skip
    assert result["status"] == "completed" and result["best_val_acc"] > 0.8, result  # random init; chance 1/3
    assert result["normalization"] == "data"
    model = load_model(tmp_path / "r")  # rebuilt from best.pt alone: no network, no weights file
    ckpt = load_checkpoint(tmp_path / "r")
    files = sorted((root / "green").glob("*.png"))[:4] + sorted((root / "blue").glob("*.png"))[:4]
    x = torch.as_tensor(np.stack([read_image(f, 3, (16, 16)) for f in files])).float()
    with torch.no_grad():
        probs = model.probabilities(x).numpy()
    path = export(ckpt, "onnx", tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], probs, atol=1e-4)
    from helpers import predict

    p = predict(tmp_path / "r", *files, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    labels = [line.split("\t")[1] for line in p.stdout.strip().splitlines()[-len(files) :]]
    assert labels == [ckpt.label(i) for i in probs.argmax(1)]


@pytest.mark.slow
def test_grey_images_feed_an_rgb_backbone_and_one_too_small_is_one_line(tmp_path):
    # fp32: bf16 autocast corrupts this deep a network's gradients on 8x8 images (see the next test)
    _, result = train(tmp_path / "r", *TINY, "model=torchvision", "model.name=mobilenet_v3_small", "epochs=1",
                      "precision=fp32")  # fmt: skip
    assert result["status"] == "completed"
    assert load_checkpoint(tmp_path / "r").in_shape == (3, 8, 8)  # the grey channel repeated, as predict does
    with pytest.raises(UserError, match=r"^the model cannot read 3x8x8 images \(.*\); give larger images"):
        train(tmp_path / "v", *TINY, "model=torchvision", "model.name=vit_b_16")


def test_weights_that_go_non_finite_where_the_loss_cannot_see_them_end_the_run_as_diverged():
    from torch import nn

    from sweep.data import synthetic
    from sweep.train import Schedule, Settings, fit

    class Unread(nn.Module):  # like a kernel tap that only ever sees padding: never reaches the loss
        def __init__(self):
            super().__init__()
            self.fc, self.tap = nn.Linear(64, 4), nn.Parameter(torch.zeros(3))

        def forward(self, x):
            return self.fc(x.flatten(1))

    class Corrupting(torch.optim.SGD):  # the gradient garbage bf16 convolutions leave there, as an update
        def step(self, closure=None):
            super().step(closure)
            if self.state.setdefault("steps", 0) > 4:
                self.param_groups[0]["params"][0].data.fill_(float("nan"))  # `tap`: a module's own come first
            self.state["steps"] += 1

    data = synthetic(n_train=64).prepare(torch.device("cpu"))
    settings = Settings(batch_size=16, epochs=5, patience=5, min_delta=0.0, seed=0, precision="bf16")
    schedule = Schedule(lambda o: torch.optim.lr_scheduler.ConstantLR(o, 1.0, 0))
    result = fit(Unread(), data, lambda p: Corrupting(p, lr=0.01), schedule, nn.CrossEntropyLoss(), settings)
    assert result.status == "diverged" and result.best_epoch == 1
    assert result.divergence.startswith("tap became non-finite in epoch 2 (bf16 autocast on a CPU corrupts")


@pytest.mark.slow
def test_bad_model_names_and_weights_are_one_line_before_any_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    cases = {
        "model.name=resnt18": "model.name=resnt18: not a torchvision classification model; did you mean resnet18",
        "model.weights=DEFAULT": "model.weights=DEFAULT: resnet18-f37072fd.pth is not in torchvision's cache and "
        f"could not be downloaded; place it in {tmp_path / 'empty' / 'hub' / 'checkpoints'} (from https://",
        "model.weights=IMAGENET": "model.weights=IMAGENET: resnet18 has weights IMAGENET1K_V1, DEFAULT, none",
        "model.weights=nope.pth": "model.weights=nope.pth: no such file",
        "model.name=squeezenet1_0": "model.name=squeezenet1_0: its classifier is not a Linear layer",
    }
    for override, line in cases.items():
        p = app(*TINY, "model=torchvision", override, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
        assert p.returncode == 2 and p.stderr.startswith(f"error: {line}"), p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


USER_KIND = """
from torch import nn
from sweep.models import register_model


@register_model("tiny_user")
class TinyUser(nn.Sequential):
    def __init__(self, in_shape, classes, width=8, activation=None, dropout=0.0):
        c, h, w = in_shape
        super().__init__(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * h * w, classes))
"""


@pytest.mark.slow
def test_a_users_own_model_kind_loads_in_report_predict_and_serve(tmp_path, monkeypatch):
    """A kind registered in the user's package: training imports it (the config names it); a
    report, predict or serve process has never imported it and finds it through the same
    SWEEP_TRUSTED_TARGETS, as joblib's and submitit's end-of-sweep report must too."""
    import sys

    from helpers import make_config, predict, report
    from hydra.utils import execution_whitelist

    from sweep import trust
    from sweep.job import run_job
    from sweep.models import MODELS
    from sweep.validate import validate

    (tmp_path / "mynets").mkdir()
    (tmp_path / "mynets" / "__init__.py").write_text(USER_KIND)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(trust, "USER_TARGETS", ("mynets.*",))
    monkeypatch.setattr(trust, "TRUSTED_TARGETS", trust.TRUSTED_TARGETS + ("mynets.*",))
    overrides = (*TINY, "model._target_=mynets.TinyUser", "~model.hidden", "~model.batch_norm")
    cfg = make_config(*overrides)
    validate(cfg)
    with execution_whitelist(trust.TRUSTED_TARGETS):
        run_job(cfg, tmp_path / "r", list(overrides))
    from PIL import Image

    Image.new("L", (8, 8), 128).save(tmp_path / "x.png")
    for fresh in (True, False):  # as a new process would: the kind unknown, its package not imported
        MODELS.pop("tiny_user", None)
        sys.modules.pop("mynets", None)
        if not fresh:
            monkeypatch.setattr(trust, "USER_TARGETS", ())
            p = predict(tmp_path / "r", tmp_path / "x.png", cwd=tmp_path)
            assert p.returncode == 2 and "model kind 'tiny_user' is not registered" in p.stderr
            continue
        p = predict(tmp_path / "r", tmp_path / "x.png", cwd=tmp_path)
        assert p.returncode == 0 and p.stdout.startswith(str(tmp_path / "x.png")), p.stderr
        MODELS.pop("tiny_user", None)
        sys.modules.pop("mynets", None)
        p = report("--run", tmp_path / "r", cwd=tmp_path)
        assert p.returncode == 0 and (tmp_path / "r" / "conv_filters.png").exists(), p.stderr  # drawn from best.pt
        MODELS.pop("tiny_user", None)
        sys.modules.pop("mynets", None)
        from fastapi.testclient import TestClient

        from sweep.serve import create_app

        assert TestClient(create_app(tmp_path / "r")).get("/info").json()["model"]["kind"] == "tiny_user"


@pytest.mark.slow
def test_your_own_weights_normalisation_is_chosen_and_recorded_and_a_runs_best_pt_transfers_with_its_own(
    tmp_path, photos
):
    """A plain state-dict file carries no normalisation: ImageNet's by default, said so in the record;
    model.normalization=data uses the data's own; a run's best.pt (or its run dir) is weights too,
    with the normalisation that run trained with."""
    root, weights = photos
    imagenet = tuple(255.0 * v for v in (0.485, 0.456, 0.406))
    _, plain = train(tmp_path / "plain", *_tv(root, weights, "model.freeze=backbone", "epochs=1"))
    assert plain["normalization"].startswith("imagenet (a state-dict file carries no normalisation")
    assert load_checkpoint(tmp_path / "plain").mean == pytest.approx(imagenet)
    _, own = train(tmp_path / "own", *_tv(root, weights, "model.normalization=data", "epochs=1"))
    assert own["normalization"].startswith("data (model.normalization")
    source = load_checkpoint(tmp_path / "own")
    assert source.mean != pytest.approx(imagenet)
    _, moved = train(tmp_path / "moved", *_tv(root, tmp_path / "own", "model.freeze=backbone", "epochs=1"))
    assert moved["status"] == "completed" and moved["normalization"].startswith("the weights' own (a run's best.pt")
    target = load_checkpoint(tmp_path / "moved")
    assert target.mean == pytest.approx(source.mean) and target.std == pytest.approx(source.std)
    assert torch.equal(target.state_dict["backbone.conv1.weight"], source.state_dict["backbone.conv1.weight"])
