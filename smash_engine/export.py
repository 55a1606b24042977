"""Export a found network for deployment: ONNX (`torch.onnx`, dynamo exporter) or `torch.export`'s `.pt2`.

Both take a batch of any size (a dynamic first dimension) and carry the architecture JSON in the file:
the ONNX model's `metadata_props["architecture"]`, the `.pt2` archive's extra file `architecture.json`.
ONNX needs the optional extra (`pip install -e '.[export]'` in a checkout: onnx and onnxscript; onnxruntime to run it).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import torch

from .errors import ConfigError, SmashError
from .space import Architecture

FORMATS = ("onnx", "pt2")


def export_model(model: torch.nn.Module, arch: Architecture, path: Path, fmt: str) -> Path:
    """Write `model` (a FixedNet of `arch`) to `path` as `fmt`; atomic (a temporary file, then a rename)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)} (or json)")
    model = model.eval().cpu()
    x = torch.zeros(2, arch.image_channels, *(arch.image_size,) * arch.spatial_dims)
    batch = ({0: torch.export.Dim("batch", min=1)},)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # torch.export.save wants the .pt2 suffix
    try:
        if fmt == "pt2":
            program = torch.export.export(model, (x,), dynamic_shapes=batch)
            torch.export.save(program, tmp, extra_files={"architecture.json": arch.to_json()})
        else:
            _onnx(model, arch, x, batch, tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise SmashError(f"could not write {path} ({e.strerror or e}): free space or fix permissions") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _onnx(model, arch: Architecture, x, batch, tmp: Path) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ConfigError("ONNX export needs onnx and onnxscript: pip install -e '.[export]' in the smash-tui "
                          "checkout") from e
    # the exporter prints its progress on stdout; a CLI that writes a file should not
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=batch, input_names=["images"],
                                    output_names=["logits"], verbose=False)
    assert program is not None
    program.model.metadata_props["architecture"] = arch.to_json()
    program.model.metadata_props["producer"] = "smash-tui"
    program.save(str(tmp))
