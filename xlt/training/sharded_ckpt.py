"""Checkpoints that are files (``torch.save``, every profile but FSDP's) or directories (torch
distributed checkpoint, what Lightning's ``FSDPStrategy`` writes with ``state_dict_type: sharded``).

A sharded checkpoint directory holds one ``__<rank>_0.distcp`` file per rank (its shards of the
weights and AdamW states), DCP's ``.metadata`` (written by rank 0 once every rank has written), and
Lightning's ``meta.pt`` (loop state, callbacks, RNG states; written by rank 0 after that). Readers
here take either kind:

- :func:`read_weights`: the full model state dict (``encoder.*``, ``heads.*``), read straight into
  one full copy: a file is memory-mapped, a directory's shards are read into freshly allocated full
  tensors one after another (DCP's no-process-group read of only the ``model`` entries; the
  optimizer states are never read). Nothing is held twice.
- :func:`read_meta`: the checkpoint without tensors of the model or optimizer (``global_step``...).
- :func:`problem`, :func:`remove`, :func:`rotate`: what the run directory does with a resume point;
  :func:`put_in_place`: a finished ``best.ckpt`` renamed into place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a checkpoint is read: `xlt.evaluate --help` stays quick
    import torch

META_FILE = "meta.pt"  # Lightning's name (pytorch_lightning.strategies.fsdp._METADATA_FILENAME)
DCP_METADATA = ".metadata"  # torch.distributed.checkpoint's, written last by its coordinator


def is_sharded(path: Path) -> bool:
    """Whether ``path`` is a sharded (directory) checkpoint."""
    return path.is_dir()


def problem(path: Path) -> str | None:
    """Why the directory ``path`` is not a complete sharded checkpoint, or None (cheap: no tensor read)."""
    if not (path / DCP_METADATA).is_file():
        return f"it is an incomplete sharded checkpoint (no {DCP_METADATA}: a rank did not finish writing)"
    if not (path / META_FILE).is_file():
        return f"it is an incomplete sharded checkpoint (no {META_FILE}: rank 0 did not finish writing)"
    if not any(path.glob("*.distcp")):
        return "it is an incomplete sharded checkpoint (no .distcp shard files)"
    return None


def remove(path: Path) -> None:
    """Delete a checkpoint, file or directory; nothing if it does not exist."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def rotate(src: Path, dst: Path) -> None:
    """Rename ``src`` (file or directory) to ``dst``, replacing what ``dst`` held. A file replaces
    atomically; a directory replaces after ``dst`` is deleted (a kill in between leaves ``src``)."""
    if (src.is_dir() and dst.exists()) or (src.is_file() and dst.is_dir()):
        remove(dst)
    os.replace(src, dst)


def put_in_place(src: Path, dst: Path) -> None:
    """Rename the finished checkpoint ``src`` to ``dst``, replacing what ``dst`` held, with ``dst``
    missing only between two renames: an older directory is renamed aside (``<dst>.old``) and deleted
    after the new one is in place (:func:`rotate` deletes it first: seconds for a large directory)."""
    aside = dst.with_name(dst.name + ".old")
    if dst.exists():
        remove(aside)
        os.replace(dst, aside)
    os.replace(src, dst)
    remove(aside)


def read_meta(path: Path) -> dict[str, Any]:
    """The checkpoint's loop and callback state (``global_step``, ``epoch``, ``callbacks``...)."""
    import torch

    if is_sharded(path):
        return dict(torch.load(path / META_FILE, map_location="cpu", weights_only=True))
    return dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True))


class NoStateDict(ValueError):
    """A checkpoint file that loads but holds no ``state_dict`` (not a checkpoint of an xlt run)."""


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The full model state dict of a checkpoint (file or sharded directory), one copy in memory."""
    import torch

    if not is_sharded(path):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
            raise NoStateDict(str(path))
        return dict(checkpoint["state_dict"])
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}
    # The planner allocates each full tensor from the metadata and the reader copies every rank's
    # shards into it; keys=("model",) leaves the optimizer states on disk.
    _load_state_dict(
        state,
        storage_reader=FileSystemReader(str(path)),
        planner=_EmptyStateDictLoadPlanner(keys={"model"}),
        no_dist=True,
    )
    return dict(state["model"])
