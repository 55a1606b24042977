"""The paper's experiments on a finished run (Section 4.1), stored in its results file; one module each.

- `correlation`: every k-th random architecture of the leaderboard trained normally (FixedNet, short
  schedule); Kendall tau, Spearman rho (scipy.stats) with bootstrap intervals, top-k overlap and the regret
  of SMASH's pick, beside the same figures for parameter count, FLOPs and synflow (`proxies.py`).
- `capacity`: a second SMASH training with a low-capacity HyperNet (same data, space, schedule), scoring
  the architectures of the latest correlation study: both HyperNets' correlations side by side.
- `corrupt`: SMASH error with the true encoding `c` and with one field of `c` shuffled across ops; the
  network still runs the true architecture (only `ArchPlan.packed`, hence `c`, changes).
- `archgrad`: dE/dc, the gradient of the validation loss with respect to the encoding, turned into
  valid edits of the architecture; a greedy walk with those edits against one with random perturbations.

Every measurement is committed as it lands (`study_archs`), so re-running a study continues it. Statistics
(`study_stats`) are recomputed from the stored rows. Symbols as in the paper: `c` the encoding, `E` the
validation error. Transfer final training lives in `transfer.py`.
"""

from ..runs import RunContext, arch_of, load_smash, open_run
from ..train import score_plan
from .archgrad import apply_edit, archgrad, candidate_edits, encoding_grad, guided
from .common import FIELDS, picks
from .correlation import baseline_stats, capacity, correlation, correlation_stats, smash_train, subset
from .corrupt import corrupt, corrupt_plan, corrupt_stats, corrupt_summary, variant_plan
from .stats import bootstrap_ci, partial_tau, rank_stats, tau_difference

__all__ = [
    "FIELDS", "RunContext", "apply_edit", "arch_of", "archgrad", "baseline_stats", "bootstrap_ci",
    "candidate_edits", "capacity", "correlation", "correlation_stats", "corrupt", "corrupt_plan", "corrupt_stats",
    "corrupt_summary", "encoding_grad", "guided", "load_smash", "open_run", "partial_tau", "picks", "rank_stats",
    "score_plan", "smash_train", "subset", "tau_difference", "variant_plan",
]
