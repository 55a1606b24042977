"""SMASH engine: search space, encoding, HyperNet, networks, training, results file.

Users of a finished search start at `smash_engine.api` (docs/api.md): the found network as a PyTorch module.

Never imports Textual or plotext: the UI and the engine meet only at the SQLite results file.

One flat folder, by choice (as nanoGPT and airbench keep theirs): each module owns one concern and is named for
it, imports only go down (no circles; `farm-studio look smash_engine` draws them), and the two parts that have a
face of their own are already packages (`store/`, the results file; `studies/`, the paper's experiments). A
reader finds a module by its layer, from the bottom up:

- under everything: `errors` (the `SmashError` tree);
- the search space and its encoding: `space`, `sampler`, `budget`, `cost`, `blocks`, `encoding`, `seeds`;
- the networks and HyperNets: `network`, `hypernet`, `graph_hyper`, `proxies`, `probes`; and how they run on a
  GPU: `conv_plans` (cuDNN's plans built ahead), `conv_graphs` (convolutions as CUDA graphs, opt-in);
- data and training: `data`, `userdata` and `imagefolder` (a user's own images), `voxels`, `batching`, `dist`,
  `loops`, `train`, `halving`, `cpu_share`;
- the run: `config`, `runs`, `context`, `scoring`, `commands`, `ranking` (rank and refine), `verify`, `finals`,
  `report`, `engine` (the conductor: SMASH training, then each phase in order); and what users call: `api`,
  `export`, `transfer`.

Subpackages for these layers were weighed and left: every import and test path would move for no new boundary
(the layers import each other in one direction already), and `from .space import Architecture` reads better than
`from ..space.space import Architecture`.
"""

import os

# Every SMASH step runs convolutions of new shapes; oneDNN's default plan cache (1,024) thrashes. A larger
# one cut a quick-preset step's CPU time by 38% here (benchmarks/README.md). Set before torch builds any.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "65536")
# cuDNN's plans, the same on CUDA: one LRU cache per thread (forward on the Python thread, gradients on autograd's),
# 10,000 plans by default. With the widths rounded (train.CUDA_MULTIPLE) a paper-space run needs ~3,500
# configurations: this cap holds them all with room, and bounds host memory (benchmarks/plan_cache.py).
os.environ.setdefault("TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT", "10000")

__version__ = "0.1.0"
