"""Structured-config schemas for ``relgrad-train`` and the value checks Hydra's type checks cannot express.

Each YAML option in ``conf/<group>/`` starts from one of these schemas (its defaults list names
``/schema/<group>@_here_: <schema>``; the ``schema/`` groups live only in Hydra's ConfigStore),
so a misspelt key or a wrong type fails at composition with Hydra's own message, before any work is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .choices import ACTIVATIONS, COMPILE_MODES, FINAL_ACTIVATIONS, INITS


class Gradient(str, Enum):
    relative = "relative"
    euclidean = "euclidean"
    autograd_logdet = "autograd_logdet"
    no_logdet = "no_logdet"
    self_normalizing = "self_normalizing"


class StepRule(str, Enum):
    adam = "adam"
    sgd = "sgd"


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


class Schedule(str, Enum):
    none = "none"
    cosine = "cosine"
    plateau = "plateau"


class Budget(str, Enum):
    wall = "wall"
    cpu = "cpu"


class MatmulPrecision(str, Enum):
    highest = "highest"
    high = "high"


class LoggerMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


DATA_ROOT = "${oc.env:RELGRAD_DATA,./data}"


@dataclass
class DataConfig:
    name: str = MISSING
    root: str = DATA_ROOT


@dataclass
class IcaData(DataConfig):
    name: str = "ica"
    dim: int = 8
    n_train: int = 20000
    n_val: int = 2000
    n_test: int = 5000
    source: str = "laplace"
    mixing: str = "mlp"
    mixing_depth: int = 2
    alpha: float = 0.3
    condition: float = 3.0
    seed: int = 0


@dataclass
class ImageData(DataConfig):
    seed: int = 0
    logit_alpha: float = 1e-6


@dataclass
class MnistData(ImageData):
    name: str = "mnist"
    n_val: int = 10000


@dataclass
class DigitsData(ImageData):
    name: str = "digits"


@dataclass
class TabularData(DataConfig):
    """BSDS300 and the MAF tabular suite: fixed preprocessing and splits, nothing to choose but the folder."""


@dataclass
class Toy2dData(DataConfig):
    name: str = "toy2d"
    shape: str = "moons"
    n_train: int = 20000
    n_val: int = 2000
    n_test: int = 5000
    seed: int = 0
    noise: float = 0.05


@dataclass
class PatchesData(DataConfig):
    name: str = "patches"
    n_train: int = 30000
    n_val: int = 5000
    n_test: int = 5000
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = "deep_mlp"
    depth: Any = "auto"  # auto or an integer ≥ 1 (OmegaConf has no int-or-str type)
    alpha: float = 0.3
    bias: bool = True
    prior: str = "auto"
    init: str = "auto"
    activation: str = "auto"
    final_activation: str = "auto"
    spline_bins: int = 8
    spline_bound: float = 5.0
    transforms: int = 5  # zuko flows (maf, realnvp, nsf)
    hidden_features: list[int] = field(default_factory=lambda: [256, 256])


@dataclass
class OptimConfig:
    name: str = "relative"
    gradient: Gradient = Gradient.relative
    step: StepRule = StepRule.adam
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.0
    weight_decay: float = 0.0
    recon_weight: float = 1.0  # λ of the self_normalizing mode's reconstruction loss
    schedule: Schedule = Schedule.none
    warmup_steps: int = 0
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_lr: float = 0.0


@dataclass
class LoggerConfig:
    name: str = "wandb"
    mode: LoggerMode = LoggerMode.offline
    project: str = "relgrad"
    entity: Optional[str] = None  # noqa: UP045 (OmegaConf needs typing.Optional)
    tags: list[str] = field(default_factory=list)


@dataclass
class TrainerConfig:
    max_epochs: int = 200
    batch_size: int = 100
    patience: int = 10
    min_delta: float = 0.0
    eval_every: int = 1
    eval_batch_size: int = 10000
    log_every: int = 50
    device: str = "auto"
    dtype: DType = DType.float32
    num_threads: str = "auto"
    reuse_memory: bool = True
    progress: bool = True
    resume: str = "never"
    checkpoint_every: int = 0
    grad_clip: float = 0.0
    samples: int = 64
    max_seconds: float = 0.0
    budget: Budget = Budget.wall
    compile: str = "none"  # torch.compile the training loss: none | default | reduce-overhead
    matmul_precision: MatmulPrecision = MatmulPrecision.highest  # training matmuls; high: TF32 where the GPU has it


@dataclass
class Config:
    data: Any = MISSING
    model: ModelConfig = MISSING
    optim: OptimConfig = MISSING
    logger: LoggerConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name, node in {
        "ica": IcaData,
        "mnist": MnistData,
        "digits": DigitsData,
        "tabular": TabularData,
        "toy2d": Toy2dData,
        "patches": PatchesData,
    }.items():
        cs.store(group="schema/data", name=name, node=node)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/optim", name="optim", node=OptimConfig)
    cs.store(group="schema/logger", name="logger", node=LoggerConfig)


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the key, the value and what is allowed."""


def check_config(cfg: Any) -> None:
    """Range checks that types alone cannot express. Raises ConfigError naming the first bad key."""
    t, o, m = cfg.trainer, cfg.optim, cfg.model

    def need(ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")

    need(t.max_epochs >= 1, "trainer.max_epochs", t.max_epochs, "use an integer ≥ 1")
    need(t.batch_size >= 1, "trainer.batch_size", t.batch_size, "use an integer ≥ 1")
    need(t.patience >= 0, "trainer.patience", t.patience, "use an integer ≥ 0 (0 stops at the first non-improvement)")
    need(t.min_delta >= 0, "trainer.min_delta", t.min_delta, "use a number ≥ 0 (nats of improvement that count)")
    need(t.eval_every >= 1, "trainer.eval_every", t.eval_every, "use an integer ≥ 1 (epochs between evaluations)")
    need(t.eval_batch_size >= 1, "trainer.eval_batch_size", t.eval_batch_size, "use an integer ≥ 1")
    need(t.log_every >= 1, "trainer.log_every", t.log_every, "use an integer ≥ 1 (steps between log records)")
    need(
        str(t.num_threads) == "auto" or str(t.num_threads).isdigit(),
        "trainer.num_threads",
        t.num_threads,
        "use auto (one thread for small steps, else the cores left to this job), 0 (torch's default) or a count",
    )
    need(t.samples >= 0, "trainer.samples", t.samples, "use an integer ≥ 0")
    need(t.checkpoint_every >= 0, "trainer.checkpoint_every", t.checkpoint_every, "use 0 (off) or a step count")
    need(
        t.compile in COMPILE_MODES,
        "trainer.compile",
        t.compile,
        "use none, default (torch.compile) or reduce-overhead (torch.compile with CUDA graphs on a GPU)",
    )
    need(t.grad_clip >= 0, "trainer.grad_clip", t.grad_clip, "use 0 (off) or a positive maximum gradient norm")
    need(
        t.device == "auto" or t.device == "cpu" or str(t.device).startswith("cuda"),
        "trainer.device",
        t.device,
        "use auto, cpu, cuda or cuda:N",
    )
    need(o.lr > 0, "optim.lr", o.lr, "the learning rate must be positive")
    need(o.eps > 0, "optim.eps", o.eps, "must be positive")
    need(o.momentum >= 0, "optim.momentum", o.momentum, "must be ≥ 0")
    need(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "must be ≥ 0")
    need(
        len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
        "optim.betas",
        list(o.betas),
        "two numbers in [0, 1)",
    )
    need(o.recon_weight >= 0, "optim.recon_weight", o.recon_weight, "a weight ≥ 0 for the reconstruction loss")
    need(t.max_seconds >= 0, "trainer.max_seconds", t.max_seconds, "use 0 (no time budget) or a number of seconds")
    need(o.warmup_steps >= 0, "optim.warmup_steps", o.warmup_steps, "use 0 (no warm-up) or a step count")
    need(0 < o.plateau_factor < 1, "optim.plateau_factor", o.plateau_factor, "a factor strictly between 0 and 1")
    need(o.plateau_patience >= 0, "optim.plateau_patience", o.plateau_patience, "use an integer ≥ 0 (evaluations)")
    need(0 <= o.min_lr < o.lr, "optim.min_lr", o.min_lr, f"a number ≥ 0 below optim.lr={o.lr}")
    need(
        m.depth == "auto" or (isinstance(m.depth, int) and not isinstance(m.depth, bool) and m.depth >= 1),
        "model.depth",
        m.depth,
        "use auto (2 for synthetic ICA, 6 otherwise) or an integer ≥ 1 (number of affine layers)",
    )
    need(0 < m.alpha < 1, "model.alpha", m.alpha, "the smooth leaky-ReLU slope must lie strictly between 0 and 1")
    need(m.init in ("auto", *INITS), "model.init", m.init, f"choose auto, {', '.join(INITS)}")
    need(m.activation in ("auto", *ACTIVATIONS), "model.activation", m.activation,
         f"choose auto, {', '.join(ACTIVATIONS)}")  # fmt: skip
    need(m.final_activation in ("auto", *FINAL_ACTIVATIONS), "model.final_activation", m.final_activation,
         f"choose auto, {', '.join(FINAL_ACTIVATIONS)}")  # fmt: skip
    need(m.transforms >= 1, "model.transforms", m.transforms, "use an integer ≥ 1")
    need(len(m.hidden_features) >= 1 and all(h >= 1 for h in m.hidden_features), "model.hidden_features",
         list(m.hidden_features), "one or more positive layer widths, e.g. [256,256]")  # fmt: skip
    need(m.spline_bins >= 2, "model.spline_bins", m.spline_bins, "use an integer ≥ 2")
    need(0 < m.spline_bound < 1e6, "model.spline_bound", m.spline_bound, "a positive number (splines act on [−B, B])")
