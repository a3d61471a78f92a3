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
import copy
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


def input_groups(config) -> dict[str, tuple[str, slice]]:
    """Each input group the network has: (prefix of the trunk reading it, its input channels).

    The noise trunk reads the SRM residuals (if any) and then the error levels (if any).
    """
    srm = 3 * config.srm
    groups = {"rgb": ("encoder.", slice(None))}
    if config.srm:
        groups["srm"] = ("encoder_srm.", slice(0, srm))
    if config.extra_channels:
        groups["error-levels"] = ("encoder_srm.", slice(srm, None))
    return groups


def silenced(model, groups: tuple[str, ...], output: Path) -> Path:
    """A copy of ``model`` whose first convolutions ignore the input ``groups``."""
    from cflnet_sdk.training.checkpoint import save_checkpoint

    model = copy.deepcopy(model)
    state = model.state_dict()
    for group in groups:
        prefix, channels = input_groups(model.config)[group]
        first = next(k for k, v in state.items() if k.startswith(prefix) and v.dim() == 4)
        state[first][:, channels] = 0
    return save_checkpoint(model, output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", required=True, help="labelled folder `cflnet evaluate` reads")
    parser.add_argument("--json", type=Path, help="write the scores here too")
    args = parser.parse_args()

    from cflnet_sdk.training.checkpoint import load_checkpoint
    from cflnet_sdk.training.evaluate import evaluate, evaluate_baselines

    network = load_checkpoint(args.checkpoint)
    present = input_groups(network.config)
    baselines = evaluate_baselines(args.data)
    scores = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, groups in ABLATIONS.items():
            if not set(groups) < set(present) and groups:
                continue  # it silences an input the network lacks, or every input
            model = silenced(network, groups, Path(folder) / "ablated.safetensors")
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
