"""The GPU check's report: gpu_check.json and gpu_check.md, rewritten after every step.

Why rewritten, not written once at the end: a lent GPU machine gives minutes, and a crash, an
exception or the caller's time-out must not lose the steps that finished before it. Each save
replaces both files atomically, so they are complete and consistent at every moment.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# A dry run's CPU stands in for the GPU, at a speed no one knows (a 2-core CI machine's can be
# several times slower than the one the limits were timed on): each step, and the budget, get
# this many times their GPU limit there, so the dry run checks the paths, not the CPU's speed.
DRY_SLACK = 3.0


def slack(dry_run: str | None) -> float:
    """How many times its GPU limit a step, and the budget, may take in this run."""
    return DRY_SLACK if dry_run else 1.0


@dataclass
class StepResult:
    name: str
    status: str  # ok | failed | skipped
    seconds: float
    limit_s: float  # its share of the budget on a GPU machine
    detail: str
    accelerated: bool = False  # runs only where TensorRT or ONNX Runtime's CUDA provider import


# Result tables: title, then (column heading, row key, number format or "" for text).
Column = tuple[str, str, str]
TABLES: dict[str, tuple[str, tuple[Column, ...]]] = {
    "latency": ("Model latency (per batch: numpy in, probability back on the host)", (
        ("model", "model", ""), ("backend", "backend", ""), ("precision", "precision", ""),
        ("device", "device", ""), ("batch", "batch_size", ""),
        ("p50 ms", "latency_p50", ".2f"), ("min ms", "latency_min", ".2f"),
        ("img/s", "throughput", ".1f"), ("e2e ms/img", "e2e_per_image", ".2f"),
        ("GPU MB", "gpu_memory_mb", ".0f"), ("note", "note", ""))),
    "tile": ("Tile mode (predict on one photo, decode to map)", (
        ("model", "model", ""), ("precision", "precision", ""), ("device", "device", ""),
        ("MP", "megapixels", ".1f"), ("tiles", "tiles", ""), ("ms", "ms_per_image", ".1f"),
        ("ms/MP", "ms_per_megapixel", ".1f"), ("note", "note", ""))),
    "parity": ("Parity with the CPU (probability maps)", (
        ("model", "model", ""), ("precision", "precision", ""), ("probes", "probes", ""),
        ("images", "images", ""), ("max abs", "max_abs", ".2e"),
        ("mean abs", "mean_abs", ".2e"), ("mask IoU", "mask_iou", ".4f"),
        ("tolerance", "atol", ".0e"), ("verdict", "verdict", ""))),
    "training": ("Training steps (forward, CE + contrastive loss, backward, Adam)", (
        ("model", "model", ""), ("precision", "precision", ""), ("path", "path", ""),
        ("batch", "batch_size", ""), ("steps", "steps", ""), ("ms/step", "ms_per_step", ".1f"),
        ("first loss", "loss_first", ".4f"), ("last loss", "loss_last", ".4f"),
        ("GPU MB", "gpu_memory_mb", ".0f"), ("note", "note", ""))),
}


def cell(row: dict[str, Any], key: str, spec: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    return format(value, spec) if spec and isinstance(value, (int, float)) else str(value)


@dataclass
class Report:
    """Everything the check found so far; ``save`` writes it to ``out``."""

    out: Path
    command: str
    date: str
    budget_s: float
    dry_run: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)

    def add_step(self, step: StepResult) -> None:
        self.steps.append(step)
        self.save()

    def add_row(self, row: dict[str, Any]) -> None:
        self.results.append(row)
        self.save()

    def as_dict(self) -> dict[str, Any]:
        return {"date": self.date, "command": self.command, "dry_run": self.dry_run,
                "budget_s": self.budget_s, "environment": self.environment,
                "steps": [asdict(s) for s in self.steps], "results": self.results}

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out / "gpu_check.json", json.dumps(self.as_dict(), indent=2) + "\n")
        write_atomic(self.out / "gpu_check.md", markdown(self.as_dict()))


def write_atomic(path: Path, text: str) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: environment, what was missing and why, steps, result tables."""
    env = report["environment"]
    lines = [f"# GPU check ({'dry run' if report['dry_run'] else 'GPU run'})", "",
             f"- date: {report['date']}", f"- command: `{report['command']}`",
             f"- GPU: {env.get('gpu') or 'none'}",
             f"- dry run: {report['dry_run'] or 'no'}"]
    lines += [f"- {key}: {value}" for key, value in env.items()
              if key not in ("gpu", "missing")]
    lines += ["", "## Missing backends", ""]
    lines += [f"- **{name}**: {why}" for name, why in env.get("missing", {}).items()] \
        or ["- none"]
    factor = slack(report["dry_run"])
    stopped = f"{factor:g} times it in this dry run" if factor != 1 else "it"
    lines += ["", "## Steps", "", "Limit: the step's share of the budget on a 16-core GPU "
              f"machine; it is stopped at {stopped}. Seconds: what it took in this run.", "",
              "| step | limit s | seconds | status | detail |", "|---|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['limit_s']:.0f} | {s['seconds']:.1f} | {s['status']} | "
              f"{s['detail']} |" for s in report["steps"]]
    for accelerated, label, note in (
            (False, "PyTorch steps (any GPU machine)",
             f"limits within the {report['budget_s']:.0f} s budget" if sum(
                 s["limit_s"] for s in report["steps"] if not s["accelerated"])
             <= report["budget_s"] else f"limits over the {report['budget_s']:.0f} s budget"),
            (True, "TensorRT / ONNX Runtime CUDA steps",
             "only where those import; give them --budget")):
        part = [s for s in report["steps"] if s["accelerated"] == accelerated]
        if part:
            lines.append(f"| **{label}** | {sum(s['limit_s'] for s in part):.0f} | "
                         f"{sum(s['seconds'] for s in part):.1f} | | {note} |")
    for kind, (title, columns) in TABLES.items():
        rows = [r for r in report["results"] if r.get("table", "latency") == kind]
        if rows:
            lines += ["", f"## {title}", "", "| " + " | ".join(c[0] for c in columns) + " |",
                      "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(cell(r, key, spec) for _, key, spec in columns) + " |"
                      for r in rows]
    return "\n".join(lines) + "\n"
