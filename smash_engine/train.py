"""SMASH training, scoring and final training as functions of (state, batch) -> metrics.

Nothing here writes files or the database: `engine.py` owns the loop, the hooks, checkpoints and commands.
Metrics come back as device tensors so the loop can batch its host syncs (no `.item()` per step).

Randomness is derived from (seed, purpose, index) rather than carried in generator state (`seeds.py`); the
loops that call these steps are in `loops.py`.
"""

from __future__ import annotations

import math
import os
import random
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import cpu_share
from .budget import Budget, draw_within
from .config import RunConfig, TrainConfig
from .data import DeviceData
from .dist import SINGLE, World
from .encoding import FIELDS, ArchPlan, corrupt_plan, encode
from .errors import ConfigError
from .hypernet import make_hypernet
from .network import FixedNet, SmashNet
from .sampler import perturb, sample_architecture
from .seeds import ARCH, BN_STATS, DROP_PATH, SANDWICH, VALIDATE, rng, torch_gen
from .space import Architecture, SpaceConfig


def cosine_lr(lr0: float, step: int, total: int) -> float:
    return 0.5 * lr0 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


class SmashModel(nn.Module):
    """HyperNet + SmashNet as one module, so that DDP sees all parameters; the architecture to run is
    set as `plan` before each call (DDP only passes tensors through). With `also` set, the same call runs those
    architectures too and returns every one's logits: a parameter that only they use must be used inside DDP's
    forward, or DDP, having marked it unused, sees its gradient arrive a second time."""

    def __init__(self, hyper: nn.Module, net: SmashNet):
        super().__init__()
        self.hyper, self.net = hyper, net
        self.plan: ArchPlan | None = None
        self.also: list[ArchPlan] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.net(x, self.plan, *self.hyper.generate(self.plan))
        if not self.also:
            return out
        keep, self.net.keep = self.net.keep, None  # path dropout's rows are the step's own ops
        try:
            return (out, *(self.net(x, p, *self.hyper.generate(p)) for p in self.also))
        finally:
            self.net.keep = keep


# On CUDA, op widths and c's width are rounded up to a multiple of this, with zero weights where they are padded, so
# results are the exact ones while cuDNN sees few enough convolution configurations that its plans stay cached:
# chosen by benchmarks/plan_cache.py (the paper space: ~3,500 configurations instead of ~16,000, +18% FLOPs). The CPU
# keeps exact widths: there every padded channel is arithmetic, and oneDNN's cache is sized for the exact space.
CUDA_MULTIPLE = 32
# TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT, set in smash_engine/__init__.py before torch builds a plan
DEFAULT_PLAN_CACHE = int(os.environ.get("TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT", "10000"))


def conv_multiple(device: torch.device) -> int:
    """The width multiple of `device` (`CUDA_MULTIPLE` on CUDA, 1 elsewhere); `SMASH_CONV_MULTIPLE` overrides it
    (1: exact widths on CUDA too, to compare)."""
    env = os.environ.get("SMASH_CONV_MULTIPLE", "")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ConfigError(f"SMASH_CONV_MULTIPLE must be a positive integer, not {env!r}")
        return int(env)
    return CUDA_MULTIPLE if device.type == "cuda" else 1


def bank_state(device: torch.device) -> bool:
    """Whether blocks run over one tensor of all banks (`network.run_block_state`): on CUDA, where a kernel costs
    host time, not on the CPU, whose results stay bit for bit what they were; `SMASH_BANK_STATE=0|1` overrides."""
    env = os.environ.get("SMASH_BANK_STATE", "")
    if env not in ("", "0", "1"):
        raise ConfigError(f"SMASH_BANK_STATE must be 0 or 1, not {env!r}")
    return env == "1" if env else device.type == "cuda"


def conv_graphs(device: torch.device):
    """Per-configuration CUDA graphs for the ops' convolutions (`conv_graphs.ConvGraphs`) where
    `SMASH_CONV_GRAPHS=1` asks for them (on the CPU: the same protocol without graphs, for tests); None by default,
    until a GPU has timed them."""
    env = os.environ.get("SMASH_CONV_GRAPHS", "")
    if env not in ("", "0", "1"):
        raise ConfigError(f"SMASH_CONV_GRAPHS must be 0 or 1, not {env!r}")
    if env != "1":
        return None
    from .conv_graphs import ConvGraphs

    return ConvGraphs(device, torch.bfloat16 if device.type == "cuda" else torch.float32)


def _parallel(module: nn.Module, world: World, device: torch.device) -> nn.Module:
    if not world.active:
        return module
    ids = [device.index] if device.type == "cuda" else None
    # each step uses a different subset of the shared conv slots: unused ones must be allowed
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


@dataclass
class Smash:
    """Everything SMASH training updates."""

    space: SpaceConfig
    hyper: nn.Module  # hypernet.HyperNet or graph_hyper.GraphHyperNet (make_hypernet)
    net: SmashNet
    opt: torch.optim.Optimizer
    device: torch.device
    model: nn.Module  # SmashModel, wrapped in DDP under torchrun

    @classmethod
    def create(cls, cfg: RunConfig, device: torch.device, world: World = SINGLE) -> Smash:
        torch.manual_seed(cfg.seed)
        hyper = make_hypernet(cfg.space, cfg.hyper).to(device)
        net = SmashNet(cfg.space, cfg.hyper.templates).to(device)
        net.multiple, net.bank_state, net.graphs = conv_multiple(device), bank_state(device), conv_graphs(device)
        if hasattr(hyper, "multiple"):  # the convolutional HyperNet; the graph one has no width
            # the fused weight norm, like the bank state, sums in another order: both where a kernel is dear
            hyper.multiple, hyper.fused_norm = net.multiple, net.bank_state
        model = _parallel(SmashModel(hyper, net), world, device)
        t = cfg.train
        # no weight decay on the HyperNet, as in the original
        # fused Adam skips a step on device when told that gradients were not finite (no host sync)
        opt = torch.optim.Adam([{"params": net.parameters(), "weight_decay": t.weight_decay},
                                {"params": hyper.parameters(), "weight_decay": 0.0}], lr=t.lr, betas=t.betas,
                               eps=t.adam_eps, fused=True)
        return cls(cfg.space, hyper, net, opt, device, model)

    def params(self) -> list[torch.nn.Parameter]:
        return [*self.net.parameters(), *self.hyper.parameters()]

    def state_dict(self) -> dict:
        return {"hyper": self.hyper.state_dict(), "net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.hyper.load_state_dict(sd["hyper"])
        self.net.load_state_dict(sd["net"])
        self.opt.load_state_dict(sd["opt"])

    def plan(self, arch: Architecture) -> ArchPlan:
        return encode(arch, self.space).to(self.device)

    def inner(self) -> SmashModel:
        """The SmashModel itself, outside DDP's wrapper (where its `plan` is set)."""
        model = self.model.module if isinstance(self.model, nn.parallel.DistributedDataParallel) else self.model
        assert isinstance(model, SmashModel)
        return model

    def update(self, total: torch.Tensor, average_over: World | None = None) -> torch.Tensor:
        """Backpropagate `total` and take the optimizer step, skipped on the device when a gradient is not finite
        (the optimizer sees `found_inf`, as with AMP's GradScaler); returns found_inf. `average_over`: average the
        gradients over its ranks by hand first, for passes run outside DDP's forward."""
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        grads = [p.grad for p in self.params() if p.grad is not None]
        if average_over is not None and average_over.active:
            for g in grads:
                torch.distributed.all_reduce(g)
                g.div_(average_over.size)
        found_inf = torch.zeros((), device=self.device)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, torch.ones((), device=self.device))
        self.opt.found_inf, self.opt.grad_scale = found_inf, None
        self.opt.step()
        return found_inf

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")


def smash_arch(cfg: RunConfig, step: int, total: int) -> Architecture:
    # the whole space, whatever the run's budget: the HyperNet and the shared weights learn from every kind of
    # architecture (the annealed early ones are small anyway), and a budget changes neither the steps nor the
    # weights, so a budgeted run's SMASH training is the unbudgeted one's; only what is scored is budgeted
    return sample_architecture(cfg.space, rng(cfg.seed, ARCH, step), progress=step / max(total, 1))


def sandwich_archs(cfg: RunConfig, step: int, progress: float) -> list[Architecture]:
    """The architectures SMASH step `step` trains beside its own under the sandwich rule: the largest and the
    smallest by FLOPs of `cfg.train.sandwich` further draws at training `progress` (as `smash_arch` draws; one
    architecture if they are the same); none when it is off."""
    k = cfg.train.sandwich
    if not k:
        return []
    from .cost import arch_cost

    r = rng(cfg.seed, SANDWICH, step)
    draws = [sample_architecture(cfg.space, r, progress=progress) for _ in range(k)]
    by_flops = sorted(draws, key=lambda a: (arch_cost(a)[1], a.id))
    return list({a.id: a for a in (by_flops[-1], by_flops[0])}.values())


def drop_masks(cfg: RunConfig, step: int, total: int, arch: Architecture, batch: int) -> torch.Tensor | None:
    """Path dropout of SMASH step `step` (`TrainConfig.drop_path`): (ops, batch) scales, 0 where an op's
    output is dropped for that image and 1 / (1 - rate) elsewhere, the rate ramped linearly from 0 at the first
    step to drop_path at the last (Bender et al. 2018). Drawn from (seed, DROP_PATH, step) on the CPU, so a
    resumed run drops what the unbroken one did; None when off."""
    rate = cfg.train.drop_path * step / max(total, 1)
    if rate <= 0:
        return None
    n_ops = sum(len(b.ops) for b in arch.blocks)
    keep = torch.rand(n_ops, batch, generator=torch_gen(cfg.seed, DROP_PATH, step)) >= rate
    return keep.float() / (1 - rate)


def smash_step(s: Smash, arch: Architecture, x: torch.Tensor, y: torch.Tensor, lr: float,
               contrast: tuple[random.Random, float, float] | None = None,
               also: list[Architecture] | tuple = (), keep: torch.Tensor | None = None) -> torch.Tensor:
    """One training step on one architecture; returns (loss, error, skipped) as a device tensor of 3.

    A step whose gradients are not finite is skipped on the device (the optimizer sees `found_inf`, as
    with AMP's GradScaler), so one bad architecture cannot poison the weights and no step waits on the host.

    `contrast` (draw, weight, margin): the shuffled-encoding contrast. The same network also runs with the
    weights the HyperNet generates from a `c` with one field (drawn from `draw`) shuffled across ops, and the
    step adds weight x max(0, margin - (loss with the shuffled c - loss with the true c)). Nothing else in SMASH's
    loss pays for reading `c`: one average generated weight serves every architecture about as well.

    `also`: more architectures trained on the same batch in the same update (the sandwich rule,
    `sandwich_archs`), their losses added to the step's (gradients accumulate, as in BigNAS). The returned
    loss and error stay the step's own architecture's, so the training curve means what it always has.

    `keep`: path dropout (`drop_masks`) for the step's own architecture's forward; the contrast's and the
    sandwich's forwards run whole.
    """
    s.hyper.train()
    s.net.train()
    plan = s.plan(arch)
    for group in s.opt.param_groups:
        group["lr"] = lr
    inner = s.inner()
    inner.plan, inner.also = plan, [s.plan(a) for a in also]
    inner.net.keep = None if keep is None else keep.to(x.device, non_blocking=True)
    try:
        with s.autocast():
            out = s.model(x)
    finally:
        inner.also, inner.net.keep = [], None
    logits, others = (out[0], out[1:]) if also else (out, ())
    loss = F.cross_entropy(logits.float(), y)
    total = loss
    for o in others:
        total = total + F.cross_entropy(o.float(), y)
    if contrast is not None:
        draw, weight, margin = contrast
        wrong = corrupt_plan(plan, s.space, draw.choice(FIELDS), draw)
        if wrong is not None:  # outside DDP's forward: one DDP forward per backward; the same parameters take part
            with s.autocast():
                shuffled = F.cross_entropy(inner.net(x, plan, *inner.hyper.generate(wrong)).float(), y)
            total = total + weight * F.relu(margin - (shuffled - loss))
    found_inf = s.update(total)
    return torch.stack([loss.detach(), (logits.argmax(1) != y).float().mean(), found_inf])


SCORE_BN = ("shared", "recal", "batch")


def bn_calibration(cfg: RunConfig, train: DeviceData) -> list[torch.Tensor] | None:
    """The fixed training images that re-estimate BatchNorm statistics for each scored architecture
    (`score_bn="recal"`): `bn_batches` batches of `score_batch`, the same for every architecture, so two
    scores differ by their architectures and not by the images. None for the other modes."""
    t = cfg.train
    if t.score_bn != "recal":
        return None
    size = min(t.score_batch, len(train))
    batches = train.epoch_batches(size, torch_gen(cfg.seed, BN_STATS, 0), augment=False)
    return [x for _, (x, _) in zip(range(t.bn_batches), batches, strict=False)]


def _shared_bns(s: Smash) -> list[nn.BatchNorm2d]:
    return [*s.net.trans_bn, s.net.head_bn]


@contextmanager
def arch_bn(s: Smash, forward, mode: str, calib: list[torch.Tensor] | None):
    """BatchNorm statistics of the architecture being scored, then the shared ones back.

    - `shared`: the running statistics SMASH training left (averaged over the last random architectures:
      the original's and the paper's evaluation; ranks poorly, `shared/reference/ranking.md`).
    - `recal`: reset the shared BN's running statistics, run the `calib` batches through this architecture
      and average their batch statistics exactly (momentum 1/(k+1) at batch k), evaluate with them; the
      shared statistics are restored after.
    - `batch`: evaluate with each evaluation batch's own statistics (needs large evaluation batches).
    Yields the `training` flag the evaluation forward must pass to BatchNorm.
    """
    if mode == "shared":
        yield False
        return
    if mode == "batch":
        s.net.train()  # sliced_bn then normalises with batch statistics; running ones are updated, so restore
    bns = _shared_bns(s)
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.momentum) for bn in bns]
    try:
        if mode == "recal":
            if not calib:
                raise ValueError("score_bn='recal' needs calibration batches (bn_calibration)")
            for bn in bns:
                bn.reset_running_stats()
            s.net.train()
            for k, x in enumerate(calib):
                for bn in bns:
                    bn.momentum = 1.0 / (k + 1)
                forward(x)
            s.net.eval()
        yield mode == "batch"
    finally:
        s.net.eval()
        with torch.no_grad():
            for bn, (mean, var, momentum) in zip(bns, saved, strict=True):
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                bn.momentum = momentum


def score_plan(s: Smash, plan: ArchPlan, data: DeviceData, batch: int, mode: str = "shared",
               calib: list[torch.Tensor] | None = None, transform=None) -> tuple[float, float]:
    """SMASH (error, loss) of `plan.arch` on all of `data` with the weights the HyperNet generates from
    `plan.c`; BatchNorm statistics per `mode` (`arch_bn`). Studies pass plans with a corrupted `c`, ablations
    a `transform(w, plan) -> w` of the generated weights (`probes.py`)."""
    s.hyper.eval()
    s.net.eval()
    with torch.inference_mode(), s.autocast():
        w, gains, mix = s.hyper.generate(plan)
        if transform is not None:
            w = transform(w, plan)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return s.net(x, plan, w, gains, mix)

        with arch_bn(s, forward, mode, calib):
            return _evaluate(forward, data, batch)


def smash_score(s: Smash, arch: Architecture, data: DeviceData, batch: int, mode: str = "shared",
                calib: list[torch.Tensor] | None = None) -> tuple[float, float]:
    """SMASH score of `arch`: what the rank phase records."""
    return score_plan(s, s.plan(arch), data, batch, mode, calib)


def _evaluate(forward, data: DeviceData, batch: int) -> tuple[float, float]:
    wrong = torch.zeros((), device=data.device)
    loss = torch.zeros((), device=data.device)
    for x, y in data.eval_batches(batch):
        cpu_share.tick()
        if x.dim() == 6:  # (B, V, C, D, H, W): every orientation of each voxel grid; average their logits
            logits = forward(x.flatten(0, 1)).float().unflatten(0, x.shape[:2]).mean(1)
        else:
            logits = forward(x).float()
        wrong += (logits.argmax(1) != y).sum()
        loss += F.cross_entropy(logits, y, reduction="sum")
    n = max(len(data), 1)
    return wrong.item() / n, loss.item() / n


def validation_archs(cfg: RunConfig) -> list[Architecture]:
    return [sample_architecture(cfg.space, rng(cfg.seed, VALIDATE, j), progress=1.0)
            for j in range(cfg.train.val_archs)]


def validation_error(s: Smash, cfg: RunConfig, data: DeviceData,
                     calib: list[torch.Tensor] | None = None) -> tuple[float, float]:
    """Mean SMASH (error, loss) over the held-out split of the same `val_archs` architectures every epoch
    (drawn once from the end-of-training space), each scored as the rank phase scores them (`score_bn`).

    The original drew a new architecture per batch, so its curve moved with the draw as much as with
    training (32-88% on digits); a fixed set makes one epoch comparable with the next.
    """
    scores = [smash_score(s, a, data, cfg.train.score_batch, cfg.train.score_bn, calib)
              for a in validation_archs(cfg)]
    return float(np.mean([e for e, _ in scores])), float(np.mean([loss for _, loss in scores]))


def rank_arch(cfg: RunConfig, purpose: int, index: int) -> Architecture:
    return rank_draw(cfg, purpose, index)[0]


def rank_draw(cfg: RunConfig, purpose: int, index: int) -> tuple[Architecture, int]:
    """Random architecture `index` of stage `purpose` (end-of-training space) within the run's budget, and the
    number of draws the budget rejected before it (`budget.draw_within`; 0 without a budget)."""
    r = rng(cfg.seed, purpose, index)
    return draw_within(Budget.of(cfg.train), lambda: sample_architecture(cfg.space, r, progress=1.0),
                       f"random architecture {index} (stage {purpose})")


def perturbed(cfg: RunConfig, base: Architecture, purpose: int, index: int) -> Architecture:
    return perturbed_draw(cfg, base, purpose, index)[0]


def perturbed_draw(cfg: RunConfig, base: Architecture, purpose: int, index: int) -> tuple[Architecture, int]:
    """Perturbation `index` of `base` for stage `purpose` within the run's budget, and the draws rejected."""
    r = rng(cfg.seed, purpose, index)
    return draw_within(Budget.of(cfg.train), lambda: perturb(base, cfg.space, r, cfg.train.perturb_prob),
                       f"perturbation {index} of {base.id} (stage {purpose})")


@dataclass
class Final:
    """Final training of one architecture with freely learned weights."""

    arch: Architecture
    net: nn.Module  # the FixedNet itself (for state dicts and evaluation)
    opt: torch.optim.Optimizer
    device: torch.device
    model: nn.Module  # what training calls: the FixedNet, or DDP around it under torchrun

    @classmethod
    def create(cls, arch: Architecture, t: TrainConfig, seed: int, device: torch.device,
               world: World = SINGLE) -> Final:
        torch.manual_seed(seed)
        net = FixedNet(arch).to(device)
        if device.type == "cuda":
            net = net.to(memory_format=torch.channels_last if arch.spatial_dims == 2 else torch.channels_last_3d)
        opt = torch.optim.SGD(net.parameters(), lr=t.final_lr, momentum=0.9, nesterov=True,
                              weight_decay=t.final_weight_decay)
        return cls(arch, net, opt, device, _parallel(net, world, device))

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        self.net.train()
        for group in self.opt.param_groups:
            group["lr"] = lr
        with self.autocast():
            logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return torch.stack([loss.detach(), (logits.argmax(1) != y).float().mean()])

    @torch.inference_mode()
    def evaluate(self, data: DeviceData, batch: int) -> tuple[float, float]:
        self.net.eval()
        with self.autocast():
            return _evaluate(self.net, data, batch)
