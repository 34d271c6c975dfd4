"""Export a trained model with its preprocessing: image in (float32, N x C x H x W, pixel values
0-255 at the trained size), class probabilities out. ONNX through torch.onnx (run it with
onnxruntime anywhere) or a torch.export program (`.pt2`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from sweep.checkpoint import Checkpoint
from sweep.errors import UserError

FORMATS = ("onnx", "pt2")


class Probabilities(nn.Module):
    """The exported graph: normalisation, the network, softmax."""

    def __init__(self, ckpt: Checkpoint) -> None:
        super().__init__()
        self.classifier = ckpt.model()

    def forward(self, image: Tensor) -> Tensor:
        return self.classifier.probabilities(image)


def export(ckpt: Checkpoint, fmt: str, out: Path) -> Path:
    """Write the model in `fmt` to `out`, with a dynamic batch size."""
    if fmt not in FORMATS:
        raise UserError(f"--export={fmt}: must be one of {', '.join(FORMATS)}")
    module = Probabilities(ckpt).eval()
    example = torch.full((2, *ckpt.in_shape), 128.0)
    batch = torch.export.Dim("batch", min=1, max=65536)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pt2":
        torch.export.save(torch.export.export(module, (example,), dynamic_shapes={"image": {0: batch}}), out)
        return out
    try:
        import onnxscript  # noqa: F401 - torch.onnx's exporter needs it
    except ImportError:
        raise UserError('--export onnx needs the onnx packages: pip install -e ".[export]"') from None
    names = {"input_names": ["image"], "output_names": ["probabilities"]}
    torch.onnx.export(
        module,
        (example,),
        out,
        **names,
        dynamic_shapes={"image": {0: batch}},
        dynamo=True,
        verbose=False,
        external_data=False,
    )
    return out
