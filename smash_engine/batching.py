"""What batching on the device shares between images (`data.DeviceData`) and voxel grids
(`voxels.VoxelData`): the samples kept there as uint8 with their int64 labels, and the batch count.

Its own module so that `data.py` can import `voxels.py` (to read ModelNet10 and batch its grids) without
`voxels.py` importing `data.py` back.
"""

from __future__ import annotations

from typing import Any, Self

import torch

from smash_engine.errors import ConfigError


class OnDevice:
    """uint8 samples `x` (N, ...) and int64 labels `y` (N,) on one device; `info` is the dataset's
    `data.DatasetInfo`. Subclasses add `normalize`, `epoch_batches` and `eval_batches`."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, info: Any, device: torch.device) -> None:
        assert x_uint8.dtype == torch.uint8 and len(x_uint8) == len(y)
        self.info = info
        self.device = torch.device(device)
        self.x = x_uint8.to(self.device).contiguous()
        self.y = y.to(self.device, torch.int64)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: torch.Tensor) -> Self:
        """The samples at `idx`, as the same kind of data."""
        idx = idx.to(self.device)
        return type(self)(self.x[idx], self.y[idx], self.info, self.device)

    def subset(self, n: int, gen: torch.Generator) -> Self:
        """A seeded random `n` of the samples, in their order here: the same images for every architecture
        that trains on it (the verify phase, a study's --train-size), so they differ by architecture."""
        return self.take(torch.randperm(len(self), generator=gen)[:n].sort().values)

    def num_batches(self, batch_size: int, drop_last: bool = True) -> int:
        if batch_size <= 0:
            raise ConfigError(f"batch size must be positive, got {batch_size}; pass one >= 1")
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)
