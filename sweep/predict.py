"""Predict with a trained model: `python sweep/predict.py RUN_DIR_or_SWEEP_DIR IMAGE_or_FOLDER ...`
(or `sweep-predict`), one line per image: path, predicted label, probability. Given a sweep dir
it takes the best run by the sweep's validation objective and says which. Each image is read as
training read its data set: converted to the trained channels, resized to the trained size, and
normalised by the model itself. `--export onnx|pt2 OUT` writes the model with that preprocessing.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # as in run.py

from sweep.errors import UserError, exit_with  # noqa: E402
from sweep.outcomes import add_pick_options  # noqa: E402
from sweep.text import printable  # noqa: E402

BATCH = 256


def image_paths(inputs: list[Path]) -> list[Path]:
    """The images named, and every image (by extension) under the folders named, in sorted order."""
    from sweep.images import image_extensions

    exts, found = image_extensions(), []
    for p in inputs:
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"{p}: no such image or folder")
    if not found:
        raise UserError(f"{', '.join(map(str, inputs))}: no images there")
    return found


def predict(run_dir: Path, paths: list[Path], top_k: int = 1) -> list[tuple[Path, list[tuple[str, float]]]]:
    """For each image, its `top_k` (label, probability) pairs, most probable first."""
    import numpy as np
    import torch

    from sweep.checkpoint import load_checkpoint
    from sweep.images import read_image

    ckpt = load_checkpoint(run_dir)  # checked whole: building its model cannot fail
    model = ckpt.model()
    channels, size = ckpt.in_shape[0], ckpt.in_shape[1:]
    out = []
    with torch.no_grad():
        for i in range(0, len(paths), BATCH):
            chunk = paths[i : i + BATCH]
            x = torch.as_tensor(np.stack([read_image(p, channels, size) for p in chunk]))
            for p, top in zip(chunk, ckpt.top(model.probabilities(x), top_k)):
                out.append((p, [(label, prob) for label, _, prob in top]))
    return out


def check_output(option: str, out: Path) -> None:
    """A file path this process can write: not a folder, in a folder that exists and is writable."""
    import os

    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise UserError(f"{option}={out}: is a folder; give a file path")
    if not folder.is_dir():
        raise UserError(f"{option}={out}: no folder {folder}; create it first")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UserError(f"{option}={out}: not writable here")


def write_csv(rows: list[tuple[Path, list[tuple[str, float]]]], out: Path) -> None:
    from sweep.files import atomic_write

    k = len(rows[0][1])
    header = ["path", "label", "probability"] + [f"{c}_{r}" for r in range(2, k + 1) for c in ("label", "probability")]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for path, top in rows:
        writer.writerow([str(path)] + [v for label, prob in top for v in (label, f"{prob:.6f}")])
    atomic_write(out, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python sweep/predict.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, metavar="RUN_DIR_or_SWEEP_DIR")
    parser.add_argument("inputs", type=Path, nargs="*", metavar="IMAGE_or_FOLDER")
    parser.add_argument("--top-k", type=int, default=1, metavar="N", help="the N most probable labels per image")
    parser.add_argument("--csv", type=Path, metavar="OUT", help="write the predictions to this CSV as well")
    add_pick_options(parser)
    parser.add_argument("--export", nargs=2, metavar=("FORMAT", "OUT"), help="onnx or pt2: write the model to OUT")
    args = parser.parse_args(argv)
    try:
        if args.top_k < 1:
            raise UserError(f"--top-k={args.top_k}: must be an integer >= 1")
        for option, out in (("--csv", args.csv), ("--export", args.export and Path(args.export[1]))):
            if out is not None:
                check_output(option, out)  # before the work, not after it
        if not args.inputs and not args.export:
            raise UserError("give images or folders to predict, or --export FORMAT OUT")
        from sweep.summary import best_run_dir

        run_dir, note = best_run_dir(args.source, args.storage, args.max_latency_ms, args.max_model_bytes)
        if note:
            print(note, file=sys.stderr)
        if args.export:
            from sweep.checkpoint import load_checkpoint
            from sweep.export import export

            path = export(load_checkpoint(run_dir), args.export[0], Path(args.export[1]))
            print(
                f"Exported {run_dir} to {path} (input: float32 N x C x H x W pixel values 0-255; output: probabilities)"
            )
        if args.inputs:
            rows = predict(run_dir, image_paths(args.inputs), args.top_k)
            for path, top in rows:  # names from a checkpoint someone sent: escaped, never a forged line
                print(f"{printable(path)}\t" + "\t".join(f"{printable(label)}\t{prob:.4f}" for label, prob in top))
            if args.csv:
                write_csv(rows, args.csv)
    except UserError as e:
        exit_with(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
