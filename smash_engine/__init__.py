"""SMASH engine: search space, encoding, HyperNet, networks, training, results file.

Never imports Textual or plotext: the UI and the engine meet only at the SQLite results file.
"""

__version__ = "0.1.0"
