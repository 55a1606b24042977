"""Run configuration: one frozen dataclass per concern, presets as plain dicts, overrides by `replace`.

The resolved `RunConfig` is saved in the results file (`runs.config_json`) and in every checkpoint; on
resume it is read back from there, so the shape-defining fields cannot drift from the saved weights.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field

from .budget import Budget, check_space
from .errors import ConfigError
from .hypernet import HyperConfig, hyper_preset
from .space import SpaceConfig, space_preset
from .userdata import KINDS as USER_KINDS


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100  # SMASH training epochs over the training split
    batch_size: int = 50  # images per step; one architecture per step
    lr: float = 1e-3  # Adam, cosine-annealed per step to 0
    betas: tuple[float, float] = (0.5, 0.999)
    adam_eps: float = 1e-8  # torch's default; the authors used 1e-4 (a third of the HyperNet's gradients are below it)
    weight_decay: float = 1e-4  # on SmashNet's free weights, not on the HyperNet (the original's choice)
    val_size: int = 5000  # held-out images carved from the training set, seeded
    score_batch: int = 500  # images per forward when scoring (the larger the faster)
    # BatchNorm statistics when scoring (train.arch_bn): shared (the running ones SMASH training left, as
    # the original), recal (re-estimated per architecture on bn_batches x score_batch training images) or batch
    score_bn: str = "shared"
    bn_batches: int = 4
    val_archs: int = 20  # the fixed architectures behind the per-epoch validation SMASH error
    val_every: int = 1  # epochs between two points of that curve (the last epoch always has one)
    n_random: int = 500  # rank phase: random architectures scored
    n_perturb: int = 100  # refine phase: perturbations of the best random architecture
    n_hillclimb: int = 100  # refine phase: greedy hill-climbing steps
    perturb_prob: float = 0.05  # chance of resampling each field of each op
    # verify phase (halving.py): successive halving over the first verify_top of verify_order (0 = no verify phase),
    # keeping the best 1/verify_eta by held-out loss at each rung, the whole phase training verify_budget x the images
    # SMASH training went through; verify_add (flops | naswot) adds that baseline's best verify_add_top as candidates
    verify_top: int = 16
    verify_eta: int = 4
    verify_budget: float = 1.0
    verify_add: str = ""
    # the order the verify phase takes its verify_top from (ORDER_CHOICES): smash (SMASH's error), flopsres (FLOPs'
    # order, SMASH's residual on log FLOPs breaking near-ties) or rankavg (mean rank of SMASH, FLOPs and NASWOT).
    # flopsres by measurement: on a 300-architecture pool its pick was the best of every way of picking in all four
    # cells (3 and 10 SMASH epochs, 2 seeds; benchmarks/pool_quality.py, docs/search-quality.md)
    verify_order: str = "flopsres"
    verify_add_top: int = 4
    final_top: int = 1  # architectures final-trained after the search (0 = none)
    final_epochs: int = 100
    final_batch: int = 50
    final_lr: float = 0.1  # SGD Nesterov 0.9, cosine per step
    final_weight_decay: float = 1e-4
    # the shuffled-encoding contrast (train.smash_step; 0 = off): every contrast_every-th SMASH step also runs its
    # network with a c whose one field is shuffled across ops, adding contrast x max(0, contrast_margin - (its
    # loss - the true c's loss)), which pays the HyperNet for reading c
    contrast: float = 0.0
    contrast_margin: float = 0.1
    contrast_every: int = 2
    # the sandwich rule (train.sandwich_archs; 0 = off): each SMASH step also trains, on the same batch, the largest
    # and the smallest by FLOPs of `sandwich` more draws (slimmable networks, once-for-all), so the extremes of the
    # space are seen every step; costs about three forward and backward passes a step
    sandwich: int = 0
    # path dropout (train.drop_masks; 0 = off): during SMASH training each op's output is dropped from the banks it
    # writes, per image, with a rate ramped linearly from 0 to drop_path over the schedule (Bender et al. 2018, who
    # found it needed for one-shot scores to track stand-alone accuracy); no op can lean on the others' paths
    drop_path: float = 0.0
    log_every: int = 10  # steps per row of the training curve (mean over the window)
    max_failures: int = 20  # consecutive failing steps or scores before the run stops
    # a budget on every architecture the search scores (budget.py; 0 = none): parameters, and forward MFLOPs per
    # image counted as cost.arch_cost counts them (2 per multiply-add). SMASH training itself draws from the whole space
    max_params: int = 0
    max_mflops: float = 0.0


@dataclass(frozen=True)
class RunConfig:
    preset: str
    dataset: str
    space: SpaceConfig
    hyper: HyperConfig
    train: TrainConfig
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    download: bool = False
    name: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        d = dict(d)
        hyper = dict(d.pop("hyper"))
        hyper["dense"] = tuple(hyper["dense"])
        train = dict(d.pop("train"))  # files from before a field existed take its default (max_params, ...)
        for gone in ("verify_epochs", "verify_images"):  # the single-rung verify phase before successive halving
            train.pop(gone, None)
        train["betas"] = tuple(train["betas"])
        return cls(space=SpaceConfig.from_dict(d.pop("space")), hyper=HyperConfig(**hyper),
                   train=TrainConfig(**train), **d)


# Each preset: dataset, search-space preset, HyperNet preset, training overrides.
PRESETS: dict[str, dict] = {
    "quick": dict(dataset="digits", space="quick", hyper="small",
                  train=dict(epochs=30, batch_size=50, val_size=300, score_batch=300, n_random=60, n_perturb=10,
                             n_hillclimb=10, final_epochs=15, final_batch=50, final_lr=0.05, log_every=4,
                             val_archs=10, val_every=3)),
    "fmnist": dict(dataset="fashion-mnist", space="fmnist", hyper="paper",
                   train=dict(epochs=10, batch_size=128, val_size=5000, score_batch=1000, n_random=300,
                              n_perturb=50, n_hillclimb=50, final_epochs=15, final_batch=128, log_every=20)),
    "paper": dict(dataset="cifar100", space="paper", hyper="paper", train=dict()),
}

# Datasets whose images a preset's space can take: (channels, size, classes).
DATASET_SHAPES = {"digits": (1, 8, 10), "mnist": (1, 32, 10), "fashion-mnist": (1, 32, 10),
                  "fashion-mnist16": (1, 16, 10), "cifar10": (3, 32, 10),
                  "cifar100": (3, 32, 100), "stl10": (3, 96, 10), "imagenet32": (3, 32, 1000)}


# what `verify_add` may name: a free baseline whose best are added to the verify phase's candidates (halving.py)
ADD_CHOICES = ("", "flops", "naswot")
# what `verify_order` may name: the orders the verify phase can take its `verify_top` from (`halving.candidates`,
# `halving.blend_orders` makes the two blends); defined here, where the configuration is, so that this module
# imports nothing from the training side
ORDER_CHOICES = ("smash", "flopsres", "rankavg")

# past these an option is a typo, and some would not fit the results file's 64-bit integers
MAX_OPTION = 10**9
MAX_SEED = 2**32 - 1

# options where 0 means "none" (no final training, no verify phase, no added candidates, no budget)
ZERO_MEANS_NONE = ("final_top", "verify_top", "verify_add_top", "max_params", "max_mflops", "contrast",
                   "sandwich", "drop_path")


def preset_image_size(preset: str) -> int:
    """The image side a preset's search space is sized for (its own dataset's): a user's images are resized to it."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return DATASET_SHAPES[PRESETS[preset]["dataset"]][1]


def make_config(preset: str = "quick", dataset: str | None = None, seed: int = 0, device: str = "auto",
                data_dir: str | None = None, download: bool = False, name: str = "", hyper: str | None = None,
                data: dict | None = None, **train_overrides) -> RunConfig:
    """Resolve a preset with CLI overrides (None means "keep the preset's value"); `hyper` names a HyperNet
    preset (`hypernet.HYPER_PRESETS`) in place of the preset's. `data`: a user's dataset (`dataset` folder or npz),
    the spec `userdata.prepare` made; it is kept in `extra["data"]`."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    dataset = dataset or p["dataset"]
    if dataset in USER_KINDS:
        return _user_config(preset, dataset, seed, device, data_dir, name, hyper, data, train_overrides)
    if dataset == "modelnet10":
        raise ConfigError("modelnet10 holds 3-D voxel grids, which SMASH networks do not take; search on an "
                          "image dataset, then train the found architecture on it with `smash-tui final DB "
                          "--arch ID --dataset modelnet10`")
    if dataset not in DATASET_SHAPES:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_SHAPES)}")
    channels, size, classes = DATASET_SHAPES[dataset]
    space = space_preset(p["space"], image_channels=channels, image_size=size, num_classes=classes)
    overrides = {k: v for k, v in train_overrides.items() if v is not None}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed must be a whole number from 0 to {MAX_SEED}, got {seed}")
    for key, value in overrides.items():
        if isinstance(value, float) and not math.isfinite(value) or isinstance(value, int | float) and \
                abs(value) > MAX_OPTION:
            raise ConfigError(f"--{key.replace('_', '-')} must be a finite number up to {MAX_OPTION:,}, got {value}")
        if isinstance(value, int) and value <= 0 and key not in ZERO_MEANS_NONE:
            raise ConfigError(f"--{key.replace('_', '-')} must be positive, got {value}")
        if key in ZERO_MEANS_NONE and value < 0:
            raise ConfigError(f"--{key.replace('_', '-')} must be 0 or more, got {value:g}")
    train = dataclasses.replace(TrainConfig(**p["train"]), **overrides)
    if train.verify_eta < 2:
        raise ConfigError(f"--verify-eta must be 2 or more (each rung keeps 1/eta), got {train.verify_eta}")
    if not 0 < train.verify_budget <= 10:
        raise ConfigError(f"--verify-budget is a fraction of SMASH's training images, in (0, 10]; "
                          f"got {train.verify_budget:g}")
    if train.verify_order not in ORDER_CHOICES:
        raise ConfigError(f"unknown --verify-order {train.verify_order!r}; choose {', '.join(ORDER_CHOICES)}")
    if train.verify_add not in ADD_CHOICES:
        raise ConfigError(f"unknown --verify-add {train.verify_add!r}; choose flops or naswot (or leave it out)")
    if not train.contrast_margin > 0:
        raise ConfigError(f"--contrast-margin must be positive, got {train.contrast_margin:g}")
    if train.sandwich == 1:
        raise ConfigError("--sandwich is how many more architectures each step draws to take the largest and the "
                          "smallest of; use 2 or more, or 0 for off")
    if not 0 <= train.drop_path < 1:
        raise ConfigError(f"--drop-path is a rate in [0, 1), got {train.drop_path:g}")
    if train.score_bn not in ("shared", "recal", "batch"):
        raise ConfigError(f"unknown --score-bn {train.score_bn!r}; choose shared, recal or batch")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    check_space(space, Budget.of(train), seed, f"the {preset} preset's")  # before any results file is made
    return RunConfig(preset, dataset, space, hyper_preset(hyper or p["hyper"]), train, seed, device, data_dir,
                     download, name or preset)


def _user_config(preset: str, dataset: str, seed: int, device: str, data_dir: str | None, name: str,
                 hyper: str | None, data: dict | None, overrides: dict) -> RunConfig:
    """A preset on a user's images: the space takes their channels, size and classes; unless --val-size is given,
    the held-out split is the preset's, at most a fifth of the training split; one batch must be left to train."""
    if data is None or data.get("kind") != dataset:
        raise ConfigError(f"--dataset {dataset} needs --data-dir PATH (see README, \"Your own images\")")
    n = data["n_train"]
    if overrides.get("val_size") is None:
        overrides = {**overrides, "val_size": min(TrainConfig(**PRESETS[preset]["train"]).val_size, n // 5)}
    cfg = make_config(preset, PRESETS[preset]["dataset"], seed, device, None, False, name, hyper, **overrides)
    t = cfg.train
    if n - t.val_size < t.batch_size or t.val_size < 1:
        raise ConfigError(f"{data['path']}: {n:,} training images are too few to hold out {t.val_size:,} for SMASH "
                          f"scores (--val-size) and train on batches of {t.batch_size} (--batch-size); add images, "
                          "or lower those")
    space = dataclasses.replace(cfg.space, image_channels=data["channels"], image_size=data["image_size"],
                                num_classes=data["num_classes"])
    check_space(space, Budget.of(t), seed, f"the {preset} preset's")
    return dataclasses.replace(cfg, dataset=dataset, space=space, data_dir=data_dir, extra={"data": data})
