"""The one place that saves and loads models and training checkpoints.

A model file is a `.safetensors` file: tensors plus string metadata holding the model's config, the format
version, where it came from and how well it did. `load_model()` rebuilds any model from the file alone and
never unpickles anything: a file that is not one of ours is refused with a one-line `ModelFileError`.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from .imageio import write_atomically
from .models import Denoiser, build_model, count_parameters

FORMAT_NAME = "cleandoc-model"
FORMAT_VERSION = 1
# The shipped models, by the name `--model` accepts.
SHIPPED_MODELS = ("default",)
_MAX_HEADER_BYTES = 64 * 1024 * 1024
_OPTIMIZER_PREFIX = "optimizer."


class ModelFileError(Exception):
    """A model file that cannot be used; str() is one line naming the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")


def shipped_model_path(name: str = "default") -> Path:
    """A shipped model: inside the installed package (wheel), or in `models/` of a source checkout."""
    packaged = Path(__file__).parent / "_models" / f"{name}.safetensors"
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parent.parent / "models" / f"{name}.safetensors"


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


def _encode(tensors: dict[str, torch.Tensor], metadata: dict) -> bytes:
    header = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        **{key: json.dumps(value) for key, value in metadata.items()},
    }
    return save_safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=header)


def save_model(model: torch.nn.Module, path: str | os.PathLike, info: dict | None = None) -> None:
    """Save weights with the config beside them; `info` (provenance, figures) rides along as JSON."""
    _save(Path(path), _encode(model.state_dict(), {"config": model.config, "info": info or {}}))


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict, info: dict | None = None) -> None:
    """A model file that also carries the optimizer's tensors and the training loop's state, for --resume."""
    opt = optimizer.state_dict()
    tensors = dict(model.state_dict())
    scalars: dict[str, dict] = {}
    for index, slots in opt["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{_OPTIMIZER_PREFIX}{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    metadata = {"config": model.config, "info": info or {}, "training_state": state,
                "optimizer_groups": opt["param_groups"], "optimizer_scalars": scalars}
    _save(Path(path), _encode(tensors, metadata))


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and decoded metadata of one of our files, or a ModelFileError saying why not."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ModelFileError(path, "is a folder, not a model file") from None
    except OSError as exc:
        raise ModelFileError(path, f"cannot read ({exc.strerror or exc})") from None
    # A safetensors header is JSON right after its 8-byte length; only without one can the first bytes be
    # a zip (torch.save) or pickle signature (a header length may well begin with those bytes).
    if data[8:9] != b"{" and (data[:2] == b"PK" or data[:1] == b"\x80"):
        raise ModelFileError(path, "is a pickle-based PyTorch file (.pt/.pth); cleandoc loads only .safetensors "
                                   "model files, since unpickling can run arbitrary code")
    if len(data) < 8:
        raise ModelFileError(path, "is empty or truncated, not a .safetensors model file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(len(data) - 8, _MAX_HEADER_BYTES):
        raise ModelFileError(path, "is truncated or not a .safetensors file (bad header length)")
    try:
        header = json.loads(data[8:8 + header_len])
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict):
            raise TypeError
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError):
        raise ModelFileError(path, "is not a .safetensors file (unreadable header)") from None
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(path, "is a .safetensors file without cleandoc metadata (not a cleandoc model)")
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise ModelFileError(path, "has an unreadable format version") from None
    if version > FORMAT_VERSION:
        raise ModelFileError(path, f"uses model format {version}, newer than this cleandoc understands "
                                   f"({FORMAT_VERSION}); upgrade cleandoc")
    try:
        tensors = load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelFileError(path, f"is truncated or corrupt ({str(exc).splitlines()[0]})") from None
    try:
        decoded = {k: json.loads(v) for k, v in metadata.items() if k not in ("format", "format_version")}
    except json.JSONDecodeError:
        raise ModelFileError(path, "has corrupt metadata") from None
    decoded["format_version"] = version
    if not isinstance(decoded.get("config"), dict):
        raise ModelFileError(path, "has no model config in its metadata")
    return tensors, decoded


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about its model, for people and tools: the architecture `config` (which rebuilds
    it), the file's `format_version`, its `provenance` (what `cleandoc train` recorded: the command, the data
    sources and their split, the options, the log of every epoch) and what the tiler needs to know of it."""

    source: str
    config: dict
    format_version: int
    provenance: dict
    receptive_radius: int
    size_multiple: int
    parameters: int

    @property
    def figures(self) -> dict:
        """The figures the file records from training: validation RMSE and the epoch it was reached at."""
        return {key: self.provenance[key] for key in ("val_rmse", "best_epoch", "epoch") if key in self.provenance}


def _rebuild(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> tuple[Denoiser, ModelInfo]:
    try:
        model = build_model(metadata["config"])
    except ValueError as exc:
        raise ModelFileError(path, str(exc)) from None
    weights = {k: v for k, v in tensors.items() if not k.startswith(_OPTIMIZER_PREFIX)}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelFileError(path, f"weights do not fit its config ({detail})") from None
    provenance = metadata.get("info", {})
    info = ModelInfo(source=str(path), config=model.config, format_version=metadata["format_version"],
                     provenance=provenance if isinstance(provenance, dict) else {},
                     receptive_radius=model.receptive_radius, size_multiple=model.size_multiple,
                     parameters=count_parameters(model))
    return model.eval(), info


def resolve_model_path(name: str | os.PathLike | None = None) -> Path:
    """The file of a shipped model by name ("default" when None; a file called like one is reached as ./NAME),
    or the path itself."""
    shipped = name is None or str(name) in SHIPPED_MODELS
    path = shipped_model_path(str(name or "default")) if shipped else Path(name)
    if not path.exists():
        hint = " (the shipped model is missing from this installation)" if shipped else ""
        raise ModelFileError(path, f"no such model file{hint}")
    return path


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
               ) -> tuple[Denoiser, ModelInfo]:
    """Rebuild a model from a file we saved, or a shipped model by name (`resolve_model_path`), in eval mode on
    `device`, its weights laid out channels-last (faster convolutions, the same results), with what its file
    says about it."""
    path = resolve_model_path(path)
    tensors, metadata = _read_file(path)
    model, info = _rebuild(path, tensors, metadata)
    return model.to(device, memory_format=torch.channels_last), info


def load_checkpoint(path: str | os.PathLike) -> tuple[Denoiser, dict, dict]:
    """(model, optimizer state_dict, training state) from a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    tensors, metadata = _read_file(path)
    if "training_state" not in metadata:
        raise ModelFileError(path, "is a model, not a training checkpoint (nothing to resume)")
    model = _rebuild(path, tensors, metadata)[0].train()
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(_OPTIMIZER_PREFIX):
            index, name = key[len(_OPTIMIZER_PREFIX):].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for index, scalars in metadata.get("optimizer_scalars", {}).items():
        state.setdefault(int(index), {}).update(scalars)
    optimizer_state = {"state": state, "param_groups": metadata["optimizer_groups"]}
    return model, optimizer_state, metadata["training_state"]
