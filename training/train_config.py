"""Training configuration: the paper's recipe as defaults, a YAML file and flags on top.

Precedence is defaults < ``--config FILE`` < flags. The resolved config is written to the run
directory as ``config.yaml``, so a run can always be repeated or resumed from what it used.
Torch-free: the CLI validates a config before any heavy import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
# Settings that may change when a run is resumed: they do not alter the math of a step.
RESUMABLE_OVERRIDES = frozenset({"epochs", "workers", "device", "save_every", "max_steps",
                                 "keep_epochs", "compile", "log_every", "progress", "out"})


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. Defaults reproduce the paper (DESIGN section 3)."""

    # model
    backbone: str = "resnet50"
    srm: bool = True  # the noise stream's SRM residuals; off: error levels alone feed it (ours)
    aspp_channels: int = 512
    embedding_dim: int = 256
    pretrained_backbone: str | None = None
    init: str | None = None  # checkpoint whose weights training starts from (fine-tuning)
    size: int = 256
    # input: "resize" (the paper's) or "tile" (native crops); error-level channels (ours)
    mode: str = "resize"
    ela_qualities: tuple[int, ...] = ()
    # optimisation (Adam, no weight decay, StepLR x0.8 every 20 epochs)
    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_step_epochs: int = 20
    lr_gamma: float = 0.8
    # weights validated and saved: an exponential moving average of the trained ones (ours;
    # 0 = off, the paper's); timm's ModelEmaV3 with its warm-up, so early steps count less
    ema_decay: float = 0.0
    # loss
    class_weights: tuple[float, float] = (0.0892, 0.9108)
    contrastive_weight: float = 1.0
    # ours (0, off, is the paper's): BCE of the image score (top-1% mean) vs tampered at all
    image_weight: float = 0.0
    patch_size: int = 4
    temperature: float = 0.1
    seed: int = 1221
    # data
    data: str | None = None
    val: str | None = None
    data_format: str = "auto"
    val_fraction: float = 0.1
    synthetic: bool = False
    steps_per_epoch: int = 100
    val_samples: int = 64
    synth_kinds: tuple[str, ...] = ("splice", "copy-move", "removal", "enhance")
    # share of synthetic samples saved as JPEG at the end; None: the recipe's (tile mode 0.5)
    synth_save_jpeg: float | None = None
    # share of synthetic samples left unedited (default 0.1): every compression history of a
    # photo nobody edited, so the model learns to say nothing there
    synth_pristine: float | None = None
    # JPEG qualities of the synthetic compressions (LOW, HIGH); None: the generator's 60-95
    synth_jpeg_quality: tuple[int, int] | None = None
    sources: tuple[str, ...] = ()  # photo folders for synthetic data; () = packaged photos
    # photos of those folders never used (folder/file names): validation photos kept by a list
    exclude_photos: tuple[str, ...] = ()
    # speed
    workers: int = 2
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    # run directory and checkpoints
    out: str | None = None
    save_every: int = 500
    keep_epochs: bool = False  # also keep each epoch's weights (epoch-NNN.safetensors)
    max_steps: int = 0
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.batch_size < 2:
            problems.append(f"batch_size {self.batch_size}: CFL-Net's ASPP image-pooling "
                            "BatchNorm cannot train on one image per batch; use 2 or more")
        if self.size < 32 or self.size % 32:
            problems.append(f"size {self.size} must be a multiple of 32 (at least 32)")
        if self.size % self.patch_size:
            problems.append(f"size {self.size} must be divisible by patch_size {self.patch_size}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r}: choose fp32, bf16 or fp16")
        if min(self.epochs, self.steps_per_epoch, self.lr_step_epochs, self.patch_size) < 1:
            problems.append("epochs, steps_per_epoch, lr_step_epochs and patch_size must be >= 1")
        if self.lr <= 0 or self.temperature <= 0 or min(self.contrastive_weight,
                                                         self.image_weight) < 0:
            problems.append("lr and temperature must be > 0, contrastive_weight and "
                            "image_weight >= 0")
        if min(self.workers, self.save_every, self.max_steps, self.val_samples) < 0:
            problems.append("workers, save_every, max_steps and val_samples must be >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay {self.ema_decay} must be in [0, 1) (0: off)")
        if self.synth_save_jpeg is not None and not 0.0 <= self.synth_save_jpeg <= 1.0:
            problems.append(f"synth_save_jpeg {self.synth_save_jpeg} must be in [0, 1]")
        if self.synth_pristine is not None and not 0.0 <= self.synth_pristine < 1.0:
            problems.append(f"synth_pristine {self.synth_pristine} must be in [0, 1)")
        if self.synth_jpeg_quality is not None and (
                len(self.synth_jpeg_quality) != 2
                or not 1 <= self.synth_jpeg_quality[0] <= self.synth_jpeg_quality[1] <= 100):
            problems.append(f"synth_jpeg_quality {self.synth_jpeg_quality} must be LOW-HIGH "
                            "within 1-100")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction {self.val_fraction} must be in [0, 1)")
        if len(self.class_weights) != 2:
            problems.append("class_weights needs two values: pristine, tampered")
        if self.synthetic and self.data:
            problems.append("give either --synthetic or --data, not both")
        if self.init and self.pretrained_backbone:
            problems.append("give either --init (a whole network) or --pretrained-backbone "
                            "(the RGB trunk only), not both")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))
        self.contract()  # mode and error-level qualities are checked where they are defined

    def contract(self) -> Contract:
        """The preprocessing contract the trained model will carry."""
        try:
            return Contract(height=self.size, width=self.size, mode=self.mode,
                            ela_qualities=tuple(self.ela_qualities))
        except ConfigError as exc:
            raise ConfigError(f"invalid training config: {exc}") from exc

    def check_data(self) -> None:
        """Training needs a data source; checked when a run starts, not when a file is read."""
        if not self.synthetic and not self.data:
            raise ConfigError("no training data: pass --data PATH (a manifest or dataset "
                              "folder) or --synthetic for generated forgeries")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def updated(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with ``overrides`` applied (unknown keys are an error naming them)."""
        return replace(self, **_coerce(overrides))


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    """Normalise keys (``batch-size`` -> ``batch_size``) and list values to tuples."""
    known = {f.name for f in fields(TrainConfig)}
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(f"unknown training setting {key!r}; known: "
                              f"{', '.join(sorted(known))}")
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping of settings (keys as in ``config.yaml``), with clear errors."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file does not exist", path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({exc}); fix the file", path) from exc
    if not isinstance(data, dict):
        raise ConfigError("a config file must hold a mapping of setting: value", path)
    return data


def resolve(config_file: str | Path | None, flags: dict[str, Any]) -> TrainConfig:
    """Defaults, then ``--init``'s network, then the file, then the flags that were given
    (``None`` = not given)."""
    values = read_yaml(config_file) if config_file else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    if values.get("init"):
        values = {**init_settings(values["init"], _coerce(values)), **values}
    try:
        return TrainConfig(**_coerce(values))
    except TypeError as exc:  # a wrong type in the YAML surfaces as TypeError in checks
        raise ConfigError(f"invalid training config: {exc}") from exc


def resume_config(run_dir: str | Path, flags: dict[str, Any]) -> TrainConfig:
    """The run's own ``config.yaml`` plus the flags that may change on resume."""
    saved = TrainConfig(**_coerce(read_yaml(Path(run_dir) / "config.yaml")))
    given = _coerce({k: v for k, v in flags.items() if v is not None})
    fixed = {k: v for k, v in given.items()
             if k not in RESUMABLE_OVERRIDES and getattr(saved, k) != v}
    if fixed:
        raise ConfigError(f"cannot change {', '.join(sorted(fixed))} when resuming (they change "
                          "what a step computes); start a new run with --out instead", run_dir)
    # max_steps bounds one invocation; a resumed run does not inherit the previous bound
    return saved.updated({"max_steps": 0, **given, "out": str(run_dir)})


# What a checkpoint fixes about the network: its weights only fit that shape. How it was fed
# (size, mode) is taken from it too, but fine-tuning may change that.
ARCHITECTURE_SETTINGS = ("backbone", "srm", "aspp_channels", "embedding_dim", "ela_qualities")


def init_settings(path: str | Path, given: dict[str, Any]) -> dict[str, Any]:
    """The architecture and input settings of the checkpoint ``--init`` starts from.

    A user fine-tuning a model should not have to repeat how it was built; a flag that
    contradicts the file's architecture is an error, since its weights could not load.
    """
    from cflnet_sdk.training.checkpoint import read_checkpoint_info

    network, contract = read_checkpoint_info(path)
    found = {"backbone": network.backbone, "srm": network.srm,
             "aspp_channels": network.aspp_channels,
             "embedding_dim": network.embedding_dim, "ela_qualities": contract.ela_qualities,
             "mode": contract.mode}
    if contract.height == contract.width:
        found["size"] = contract.height
    clashes = [f"{k} {given[k]!r} (the file's: {found[k]!r})" for k in ARCHITECTURE_SETTINGS
               if k in given and given[k] != found[k]]
    if clashes:
        raise ConfigError(f"--init {path} holds another network: {'; '.join(clashes)}; drop "
                          "those settings (they are taken from the file) or start from scratch")
    return found
