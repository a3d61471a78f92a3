"""Which inputs carry a model's skill: the same weights with input streams silenced.

    python benchmarks/input_ablation.py CHECKPOINT --data DIR [--json out.json]

Zeroes the first convolution's weights of one group of inputs at a time (the RGB trunk, the
SRM residuals, the error-level channels), retrains nothing, and scores each variant's honest
per-image pixel AUC on labelled data through ``Localizer`` (``cflnet evaluate``'s code). A
stream whose removal raises the score works against the model on that data
(docs/model-card.md, "What it sees").
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

# variant -> the input groups it silences
ABLATIONS: dict[str, tuple[str, ...]] = {
    "all inputs": (),
    "no RGB": ("rgb",),
    "no SRM": ("srm",),
    "no error levels": ("error-levels",),
    "error levels only": ("rgb", "srm"),
}
NEEDS_ERROR_LEVELS = ("no error levels", "error levels only")


def first_convolution(state: dict, prefix: str) -> str:
    """Name of the first 4-d weight of a trunk (``encoder.`` is RGB, ``encoder_srm.`` noise)."""
    return next(k for k, v in state.items() if k.startswith(prefix) and v.dim() == 4)


def silenced(checkpoint: Path, groups: tuple[str, ...], output: Path) -> Path:
    """A copy of ``checkpoint`` whose first convolutions ignore the input ``groups``."""
    from cflnet_sdk.training.checkpoint import load_checkpoint, save_checkpoint

    model = load_checkpoint(checkpoint)
    state = model.state_dict()
    noise = state[first_convolution(state, "encoder_srm.")]  # SRM residuals, then error levels
    for group in groups:
        if group == "rgb":
            state[first_convolution(state, "encoder.")].zero_()
        elif group == "srm":
            noise[:, :3] = 0
        else:
            noise[:, 3:] = 0
    return save_checkpoint(model, output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", required=True, help="labelled folder `cflnet evaluate` reads")
    parser.add_argument("--json", type=Path, help="write the scores here too")
    args = parser.parse_args()

    from cflnet_sdk.training.checkpoint import read_checkpoint
    from cflnet_sdk.training.evaluate import evaluate, evaluate_baselines

    has_error_levels = read_checkpoint(args.checkpoint)[2].channels > 3
    baselines = evaluate_baselines(args.data)
    scores = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, groups in ABLATIONS.items():
            if name in NEEDS_ERROR_LEVELS and not has_error_levels:
                continue
            model = silenced(args.checkpoint, groups, Path(folder) / "ablated.safetensors")
            metrics = evaluate(model, args.data, baselines=baselines).metrics
            scores[name] = {"pixel_auc": metrics["pixel_auc"],
                            "beats_centre_prior": metrics["beats_centre_prior"]}
            print(f"{name:18s} pixel AUC {metrics['pixel_auc']:.3f}  beats the centre prior "
                  f"on {100 * metrics['beats_centre_prior']:.1f}%", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(args.checkpoint), "data": args.data,
                                         "scores": scores}, indent=2) + "\n")


if __name__ == "__main__":
    main()
