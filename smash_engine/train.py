"""SMASH training, scoring and final training as functions of (state, batch) -> metrics.

Nothing here writes files or the database: `engine.py` owns the loop, the hooks, checkpoints and commands.
Metrics come back as device tensors so the loop can batch its host syncs (no `.item()` per step).

Randomness is derived from (seed, purpose, index) rather than carried in generator state: architecture
t of SMASH training is `sample_architecture(space, rng(seed, ARCH, t), t / T)` whatever happened before,
which makes stop + resume give exactly the run that never stopped.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import RunConfig, TrainConfig
from .data import DeviceData
from .dist import SINGLE, World
from .encoding import ArchPlan, encode
from .hypernet import HyperNet
from .network import FixedNet, SmashNet
from .sampler import perturb, sample_architecture
from .space import Architecture, SpaceConfig

# purposes for derived seeds
ARCH, DATA, RANK, PERTURB, HILLCLIMB, SAMPLE, FINAL = range(7)


def _derived(seed: int, purpose: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, purpose, index]).generate_state(1)[0])


def rng(seed: int, purpose: int, index: int) -> random.Random:
    return random.Random(_derived(seed, purpose, index))


def torch_gen(seed: int, purpose: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(_derived(seed, purpose, index))


def cosine_lr(lr0: float, step: int, total: int) -> float:
    return 0.5 * lr0 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


class SmashModel(nn.Module):
    """HyperNet + SmashNet as one module, so that DDP sees all parameters; the architecture to run is
    set as `plan` before each call (DDP only passes tensors through)."""

    def __init__(self, hyper: HyperNet, net: SmashNet):
        super().__init__()
        self.hyper, self.net = hyper, net
        self.plan: ArchPlan | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.plan, self.hyper.op_weights(self.plan))


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
    hyper: HyperNet
    net: SmashNet
    opt: torch.optim.Optimizer
    device: torch.device
    model: nn.Module  # SmashModel, wrapped in DDP under torchrun

    @classmethod
    def create(cls, cfg: RunConfig, device: torch.device, world: World = SINGLE) -> Smash:
        torch.manual_seed(cfg.seed)
        hyper, net = HyperNet(cfg.space, cfg.hyper).to(device), SmashNet(cfg.space).to(device)
        model = _parallel(SmashModel(hyper, net), world, device)
        t = cfg.train
        # no weight decay on the HyperNet, as in the original
        # fused Adam skips a step on device when told that gradients were not finite (no host sync)
        opt = torch.optim.Adam([{"params": net.parameters(), "weight_decay": t.weight_decay},
                                {"params": hyper.parameters(), "weight_decay": 0.0}], lr=t.lr, betas=t.betas,
                               fused=True)
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

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")


def smash_arch(cfg: RunConfig, step: int, total: int) -> Architecture:
    return sample_architecture(cfg.space, rng(cfg.seed, ARCH, step), progress=step / max(total, 1))


def smash_step(s: Smash, arch: Architecture, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
    """One training step on one architecture; returns (loss, error, skipped) as a device tensor of 3.

    A step whose gradients are not finite is skipped on the device (the optimizer sees `found_inf`, as
    with AMP's GradScaler), so one bad architecture cannot poison the weights and no step waits on the host.
    """
    s.hyper.train()
    s.net.train()
    plan = s.plan(arch)
    for group in s.opt.param_groups:
        group["lr"] = lr
    inner = s.model.module if isinstance(s.model, nn.parallel.DistributedDataParallel) else s.model
    inner.plan = plan
    with s.autocast():
        logits = s.model(x)
        loss = F.cross_entropy(logits.float(), y)
    s.opt.zero_grad(set_to_none=True)
    loss.backward()
    found_inf = torch.zeros((), device=s.device)
    grads = [p.grad for p in s.params() if p.grad is not None]
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, torch.ones((), device=s.device))
    s.opt.found_inf, s.opt.grad_scale = found_inf, None
    s.opt.step()
    return torch.stack([loss.detach(), (logits.argmax(1) != y).float().mean(), found_inf])


@torch.inference_mode()
def smash_score(s: Smash, arch: Architecture, data: DeviceData, batch: int) -> tuple[float, float]:
    """SMASH score: (error, loss) on all of `data` with generated weights, BN in eval mode."""
    s.hyper.eval()
    s.net.eval()
    plan = s.plan(arch)
    with s.autocast():
        w = s.hyper.op_weights(plan)
        return _evaluate(lambda x: s.net(x, plan, w), data, batch)


def _evaluate(forward, data: DeviceData, batch: int) -> tuple[float, float]:
    wrong = torch.zeros((), device=data.device)
    loss = torch.zeros((), device=data.device)
    for x, y in data.eval_batches(batch):
        if x.dim() == 6:  # (B, V, C, D, H, W): every orientation of each voxel grid; average their logits
            logits = forward(x.flatten(0, 1)).float().unflatten(0, x.shape[:2]).mean(1)
        else:
            logits = forward(x).float()
        wrong += (logits.argmax(1) != y).sum()
        loss += F.cross_entropy(logits, y, reduction="sum")
    n = max(len(data), 1)
    return wrong.item() / n, loss.item() / n


@torch.no_grad()
def validation_error(s: Smash, cfg: RunConfig, data: DeviceData, epoch: int) -> tuple[float, float]:
    """Average SMASH error over the held-out split, a new random architecture per batch (the original's
    per-epoch check), seeded by epoch so that it is comparable between epochs."""
    s.hyper.eval()
    s.net.eval()
    wrong = loss = 0.0
    for b, (x, y) in enumerate(data.eval_batches(cfg.train.batch_size)):
        plan = s.plan(sample_architecture(cfg.space, rng(cfg.seed, DATA, 10_000 * epoch + b)))
        with s.autocast():
            logits = s.net(x, plan, s.hyper.op_weights(plan)).float()
        wrong += (logits.argmax(1) != y).sum().item()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
    return wrong / max(len(data), 1), loss / max(len(data), 1)


def rank_arch(cfg: RunConfig, purpose: int, index: int) -> Architecture:
    return sample_architecture(cfg.space, rng(cfg.seed, purpose, index), progress=1.0)


def perturbed(cfg: RunConfig, base: Architecture, purpose: int, index: int) -> Architecture:
    return perturb(base, cfg.space, rng(cfg.seed, purpose, index), cfg.train.perturb_prob)


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
