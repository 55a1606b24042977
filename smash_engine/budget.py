"""A search within a budget: at most `max_params` parameters and `max_mflops` million FLOPs per image (0: no limit).

FLOPs are `cost.arch_cost`'s: forward FLOPs per image of the trained `FixedNet`, 2 per multiply-add of every
convolution and the classifier. Every architecture the search scores (the rank phase, refine's perturbations and
hill-climbing, `sample` commands) is drawn by rejection: the draw of stage `purpose`, index `i` keeps drawing from
its one derived generator `rng(seed, purpose, i)` until an architecture fits, so a budgeted run is exactly as
reproducible and resumable as an unbudgeted one (with no budget the first draw is taken, as before). A `score` or
`final` command for an architecture outside the budget is refused.

Torch-free at import (the CLI checks commands against the budget without loading torch); `check_space`, which
only `make_config` calls, imports the derived seeds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cost import arch_cost
from .errors import ConfigError
from .space import Architecture, SpaceConfig

MAX_DRAWS = 10_000  # draws one architecture may take before the search gives up on the budget
CHECK_DRAWS = 2_000  # architectures `check_space` draws to see whether the budget leaves anything
CHECK_FITS = 5  # ... and how many of them must fit: fewer makes MAX_DRAWS a real risk (p < 1/400 per draw)


@dataclass(frozen=True)
class Budget:
    max_params: int = 0  # 0: no limit
    max_mflops: float = 0.0  # 0: no limit; FLOPs as cost.arch_cost counts them (2 per multiply-add)

    @classmethod
    def of(cls, train: Any) -> Budget:
        """The budget of a `TrainConfig`, or of its dict in a results file's config (older files have none)."""
        get = train.get if isinstance(train, dict) else lambda k, d: getattr(train, k, d)
        return cls(int(get("max_params", 0) or 0), float(get("max_mflops", 0.0) or 0.0))

    def __bool__(self) -> bool:
        return bool(self.max_params or self.max_mflops)

    def fits_cost(self, params: int, flops: int) -> bool:
        return (not self.max_params or params <= self.max_params) and \
            (not self.max_mflops or flops <= self.max_mflops * 1e6)

    def fits(self, arch: Architecture) -> bool:
        return not self or self.fits_cost(*arch_cost(arch))

    def describe(self) -> str:
        """'max 100,000 params, 20 MFLOPs'."""
        parts = ([f"{self.max_params:,} params"] if self.max_params else []) + \
            ([f"{self.max_mflops:g} MFLOPs"] if self.max_mflops else [])
        return "max " + ", ".join(parts) if parts else "no budget"

    def refusal(self, arch_id: str, params: int, flops: int) -> str | None:
        """Why architecture `arch_id` (of these costs) may not be scored or trained in this run; None if it fits."""
        if self.fits_cost(params, flops):
            return None
        return (f"architecture {arch_id} has {params:,} params and {flops / 1e6:.2f} MFLOPs, outside this run's "
                f"budget ({self.describe()})")


class BudgetError(ConfigError):
    """A budget that the space (or a perturbation's neighbourhood) cannot meet."""


def draw_within(budget: Budget, draw: Callable[[], Architecture], what: str) -> tuple[Architecture, int]:
    """The first of `draw()`'s architectures within `budget`, and how many draws before it were rejected.

    `draw` must draw from one generator (the derived rng of this stage and index), so the answer is a pure
    function of (seed, stage, index) and a resumed run draws what an uninterrupted one did."""
    if not budget:
        return draw(), 0
    for rejected in range(MAX_DRAWS):
        arch = draw()
        if budget.fits(arch):
            return arch, rejected
    raise BudgetError(f"{what}: {MAX_DRAWS:,} draws in a row were outside the budget ({budget.describe()}); "
                      "start a new search with a larger --max-params / --max-mflops")


def check_space(space: SpaceConfig, budget: Budget, seed: int = 0, name: str = "the") -> None:
    """Refuse (one line) a budget that the space's architectures cannot meet, before anything is written.

    Draws up to CHECK_DRAWS architectures as the rank phase draws its first ones (`rng(seed, RANK, i)`, the
    end-of-training space), stopping once CHECK_FITS fit; pure Python, about 0.4 ms a draw on the quick space.
    A refusal names the smallest architectures drawn, by parameters and by FLOPs."""
    if not budget:
        return
    from .sampler import sample_architecture
    from .seeds import RANK, derived

    fits, costs = 0, []
    for i in range(CHECK_DRAWS):
        arch = sample_architecture(space, random.Random(derived(seed, RANK, i)), progress=1.0)
        params, flops = arch_cost(arch)
        costs.append((params, flops, arch.id))
        fits += budget.fits_cost(params, flops)
        if fits >= CHECK_FITS:
            return
    p = min(costs)
    f = min(costs, key=lambda c: (c[1], c[0]))

    def cost(c: tuple[int, int, str]) -> str:
        return f"{c[0]:,} params and {c[1] / 1e6:.2f} MFLOPs ({c[2][:8]})"

    smallest = f"the smallest of {len(costs):,} drawn has {cost(p)}" + (
        f"; the fewest FLOPs, {cost(f)}" if f != p else "")
    if fits == 0:
        raise BudgetError(f"no architecture of {name} search space fits the budget ({budget.describe()}): "
                          f"{smallest}; raise --max-params / --max-mflops")
    raise BudgetError(f"only {fits} of {len(costs):,} architectures drawn from {name} search space fit the budget "
                      f"({budget.describe()}), too few to draw a search from (at most {MAX_DRAWS:,} draws per "
                      f"architecture): {smallest}; raise --max-params / --max-mflops")
