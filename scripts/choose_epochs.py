"""Score every kept epoch of training runs on real forgeries and keep each run's best.

Runs trained with ``--keep-epochs`` hold ``epoch-NNN.safetensors``; each goes through
``cflnet evaluate`` (the product's own evaluator: Localizer, the model's contract, honest
per-image pixel AUC beside the centre prior and ELA), several at once, until a time budget.
The best epoch (``choose``) must beat ELA on the real forgeries, then does best at telling them
from unedited photos (image-level detection ROC AUC, with ``--unedited``) or, without those, on
the run's own synthetic validation (its ``metrics.csv``): the targets of a default model. Writes
``OUT/choice.json`` (every score) and ``OUT/<run>-best.safetensors`` (that run's best epoch,
float16) for shipping with ``scripts/build_default_model.sh``; with ``--keep-last`` also
``OUT/<run>-last.safetensors`` (its latest epoch, unless that is the best), to continue from.

    python scripts/choose_epochs.py RUN [RUN ...] --data SELECTION_SET [--unedited UNEDITED_SET] \
        --device cuda -o OUT
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def score(checkpoint: Path, data: Path, unedited: Path | None, device: str,
          deadline: float) -> dict | None:
    """``cflnet evaluate``'s metrics of one checkpoint on the real forgeries, with its
    ``detection_auc`` against the unedited photos (None without them), or None if it failed or
    ran out of time."""
    left = deadline - time.monotonic()
    if left < 5:
        return None
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "metrics.json"
        command = [sys.executable, "-m", "cflnet_sdk", "evaluate", "--model", str(checkpoint),
                   "--data", str(data), "--device", device, "--json", str(report),
                   *(["--data", str(unedited)] if unedited else [])]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            return None
        if done.returncode != 0:
            print(f"{checkpoint}: evaluate failed: {done.stderr[-1500:]}", flush=True)
            return None
        report = json.loads(report.read_text())
    # the verdict's rows come first, before any evidence's own
    metrics = next(r["metrics"] for r in report["results"] if not r["baseline"])
    detection = [d["detection_auc"] for d in report.get("detection", []) if not d["baseline"]]
    return {**metrics, "detection_auc": detection[0] if detection else None}


def synthetic_auc(run: Path) -> dict[int, float]:
    """Each epoch's validation AUC on the run's held-out synthetic samples (``metrics.csv``)."""
    if not (run / "metrics.csv").is_file():  # a run that never finished an epoch
        return {}
    with (run / "metrics.csv").open() as rows:
        return {int(row["epoch"]): float(row["val_pixel_auc"]) for row in csv.DictReader(rows)
                if row.get("val_pixel_auc")}


def choose(rows: list[dict]) -> dict:
    """Among epochs beating ELA on the real set, the best image-level detection against
    unedited photos where it was measured, else the best on synthetic validation; when none
    beats ELA, the best on the real set."""
    above = [row for row in rows if row["pixel_auc"] > row["ela_pixel_auc"]]
    for key in ("detection_auc", "synthetic_val_auc"):
        measured = [row for row in above if row.get(key) is not None]
        if measured:
            return max(measured, key=lambda row: row[key])
    return max(rows, key=lambda row: row["pixel_auc"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--unedited", type=Path, help="unedited photos: detection decides")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--from-epoch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3600.0, help="time budget")
    parser.add_argument("--keep-last", action="store_true", help="also each run's latest epoch")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    deadline = time.monotonic() + args.seconds
    kept = [(run, int(path.stem.split("-")[1]), path) for run in args.runs
            for path in run.glob("epoch-*.safetensors")]
    # every run's latest epochs first: with the budget cut short, they matter most
    kept = sorted((k for k in kept if k[1] >= args.from_epoch), key=lambda k: -k[1])
    with ThreadPoolExecutor(args.jobs) as pool:
        metrics = list(pool.map(
            lambda k: score(k[2], args.data, args.unedited, args.device, deadline), kept))
    synthetic = {run: synthetic_auc(run) for run in args.runs}
    table = [{"run": run.name, "epoch": epoch,
              "pixel_auc": m["pixel_auc"], "beats_centre_prior": m["beats_centre_prior"],
              "centre_prior_pixel_auc": m["centre_prior_pixel_auc"],
              "ela_pixel_auc": m["ela_pixel_auc"], "detection_auc": m["detection_auc"],
              "synthetic_val_auc": synthetic[run].get(epoch)}
             for (run, epoch, _), m in zip(kept, metrics, strict=True) if m is not None]
    table.sort(key=lambda row: (row["run"], row["epoch"]))
    args.out.mkdir(parents=True, exist_ok=True)
    choice = {"data": str(args.data), "unedited": args.unedited and str(args.unedited),
              "scores": table, "best": {}, "kept": {}}
    from cflnet_sdk.training.checkpoint import load_checkpoint, save_checkpoint

    for run in args.runs:
        rows = [row for row in table if row["run"] == run.name]
        latest = max(run.glob("epoch-*.safetensors"), default=run / "last.safetensors")
        path = latest  # nothing scored: the latest epoch, to be scored elsewhere
        if rows:
            best = choose(rows)
            choice["best"][run.name] = best
            path = run / f"epoch-{best['epoch']:03d}.safetensors"
        chosen = {"best": path, "last": latest} if args.keep_last and latest != path else \
            {"best": path}
        choice["kept"][run.name] = {role: source.name for role, source in chosen.items()}
        for role, source in chosen.items():
            save_checkpoint(load_checkpoint(source), args.out / f"{run.name}-{role}.safetensors",
                            half=True)
            print(f"{run.name} {role}: {source.name}", flush=True)
    (args.out / "choice.json").write_text(json.dumps(choice, indent=1))
    for row in table:
        print(f"{row['run']:>8} epoch {row['epoch']:3d}  AUC {row['pixel_auc']:.4f} (ELA "
              f"{row['ela_pixel_auc']:.4f})  beats prior {row['beats_centre_prior']:.1%}  "
              f"detection {row['detection_auc']}  synthetic val {row['synthetic_val_auc']}",
              flush=True)


if __name__ == "__main__":
    main()
