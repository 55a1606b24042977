"""SMASH engine: search space, encoding, HyperNet, networks, training, results file.

Users of a finished search start at `smash_engine.api` (docs/api.md): the found network as a PyTorch module.

Never imports Textual or plotext: the UI and the engine meet only at the SQLite results file.
"""

import os

# Every SMASH step runs convolutions of new shapes; oneDNN's default plan cache (1,024) thrashes. A larger
# one cut a quick-preset step's CPU time by 38% here (benchmarks/README.md). Set before torch builds any.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "65536")

__version__ = "0.1.0"
