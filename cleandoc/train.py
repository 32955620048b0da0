"""The training loop: random patches, AdamW with warm-up and cosine decay, validation on whole pages each
epoch, the best model kept, and an atomic checkpoint every epoch that `resume` continues from."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from . import __version__
from .data import PatchSampler, find_pairs, load_pairs, page_groups, split_by_group
from .metrics import squared_error
from .models import build_model, count_parameters
from .noise import NoiseBank, make_corruptor, parse_recipe
from .store import load_checkpoint, load_model, save_checkpoint, save_model
from .tiling import pick_device, run_whole

LOSSES = ("mse", "l1", "bce")


@dataclass
class TrainOptions:
    model: dict = field(default_factory=lambda: {"arch": "unet", "widths": [32, 64, 128], "unshuffle": 2, "convs": 2})
    epochs: int = 40
    patch_size: int = 128
    max_scale: float = 1.0  # half the patches are rescaled by up to this factor, up or down (1: never)
    patches_per_epoch: int = 2048
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    loss: str = "mse"
    patience: int = 10  # epochs without a better validation RMSE before stopping early; 0 never stops
    seed: int = 0
    noise: list[str] = field(default_factory=list)  # corruption recipe for synthetic pairs, e.g. ["gaussian:0.1"]
    synthetic_fraction: float = 0.0  # share of patches corrupted on the fly from clean targets
    contractive: float = 0.0  # weight of the contractive penalty on the encoder
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)


class TrainingError(Exception):
    """An expected failure of a training run (bad options, nothing to resume, diverged loss)."""


def checkpoint_path(out: Path) -> Path:
    """Where a run writing `out` keeps its resumable checkpoint."""
    return out.with_name(out.name.removesuffix(".safetensors") + ".ckpt.safetensors")


def pooled_rmse(model: torch.nn.Module, pages: list[tuple[np.ndarray, np.ndarray]], device: torch.device) -> float:
    """RMSE over every pixel of every page (the Kaggle metric)."""
    model.eval()
    squared = sum(squared_error(run_whole(model, dirty, device), clean) for dirty, clean in pages)
    return math.sqrt(squared / sum(clean.size for _, clean in pages))


def _loss(model: torch.nn.Module, dirty: torch.Tensor, clean: torch.Tensor, kind: str) -> torch.Tensor:
    logits = model.logits(dirty).float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, clean)
    if kind == "l1":
        return F.l1_loss(torch.sigmoid(logits), clean)
    return F.mse_loss(torch.sigmoid(logits), clean)


def contractive_penalty(model: torch.nn.Module, x: torch.Tensor, step: float = 1e-2) -> torch.Tensor:
    """A stochastic estimate of the contractive penalty ‖∂h/∂x‖²_F of the encoder h, per input pixel.

    The full Jacobian of a conv net is far too large, but for v ~ N(0, I), E‖J v‖² = ‖J‖²_F, and J v is one
    finite difference of the encoder: one extra forward pass per batch. Zero for an encoder that ignores x."""
    v = torch.randn_like(x)
    jv = (model.encode(x + step * v) - model.encode(x)) / step
    return jv.float().pow(2).sum() / x.numel()


def _corruptor(noise: list[str], real_pages: list[tuple[np.ndarray, np.ndarray]]):
    """The corruption process of a noise recipe; real-noise transfer takes its layers from `real_pages`."""
    try:
        recipe = parse_recipe(noise)
        bank = NoiseBank.from_pairs(real_pages) if any(name == "transfer" for name, _ in recipe) else None
        return make_corruptor(recipe, bank)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None


def diverged(history: list[dict]) -> bool:
    """True when the last epoch's training loss is over ten times the best earlier one: the run has blown up,
    e.g. into a saturated all-white output where the gradients vanish and it never recovers (seen on a GPU
    at a peak learning rate of 2e-3)."""
    earlier = [h["train_loss"] for h in history[:-1]]
    return bool(earlier) and history[-1]["train_loss"] > 10 * min(earlier)


def _learning_rate(options: TrainOptions, step: int, total: int) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to 2% of the peak."""
    warmup = max(1, total // 20)
    if step < warmup:
        return options.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return options.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(train_pages: list[tuple[np.ndarray, np.ndarray]], val_pages: list[tuple[np.ndarray, np.ndarray]],
          out: str | Path, options: TrainOptions, *, init: str | Path | None = None, resume: bool = False,
          device: str = "auto", provenance: dict | None = None,
          on_progress: Callable[[dict], None] | None = None) -> dict:
    """Train and write the best model (by validation RMSE) to `out`; return the final training state.

    on_progress receives {"event": "step", ...} after each step and {"event": "epoch", ...} after each epoch.
    """
    out = Path(out)
    ckpt = checkpoint_path(out)
    dev = pick_device(device)
    if options.loss not in LOSSES:
        raise TrainingError(f"unknown loss {options.loss!r} (choose from {', '.join(LOSSES)})")
    if resume:
        if not ckpt.exists():
            raise TrainingError(f"{ckpt}: no checkpoint to resume from")
        model, optimizer_state, state = load_checkpoint(ckpt)
        options = TrainOptions(**state["options"])
    else:
        torch.manual_seed(options.seed)
        try:
            model = load_model(init) if init else build_model(options.model)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        options.model = model.config
        state = {"epoch": 0, "step": 0, "best_rmse": None, "best_epoch": 0, "history": [],
                 "options": asdict(options)}
        optimizer_state = None
    model = model.to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    corruptor = _corruptor(options.noise, train_pages) if options.noise else None
    sampler = PatchSampler(train_pages, options.patch_size, max_scale=options.max_scale, synthesize=corruptor,
                           synthetic_fraction=options.synthetic_fraction)
    steps_per_epoch = max(1, options.patches_per_epoch // options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    amp = dev.type == "cuda" and options.amp
    precision = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    torch.backends.cudnn.benchmark = dev.type == "cuda"  # patches have one fixed shape: let cuDNN pick its kernels
    base_info = {"trained_by": f"cleandoc {__version__}", "parameters": count_parameters(model),
                 "train_pages": len(train_pages), "val_pages": len(val_pages), **(provenance or {})}
    if init and not resume:
        state.setdefault("init", str(init))
    if state.get("init"):
        base_info["initialised_from"] = state["init"]

    while state["epoch"] < options.epochs and not state.get("stopped_early"):
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        rng = np.random.default_rng([options.seed, epoch])
        torch.manual_seed(options.seed * 100_003 + epoch)
        model.train()
        losses = []
        for step in range(steps_per_epoch):
            dirty, clean = (torch.from_numpy(a).to(dev) for a in sampler.batch(options.batch_size, rng))
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(options, state["step"], total_steps)
            with precision():
                loss = _loss(model, dirty, clean, options.loss)
                if options.contractive:
                    loss = loss + options.contractive * contractive_penalty(model, dirty)
            if not torch.isfinite(loss):
                raise TrainingError(f"the loss became {loss.item()} at epoch {epoch}; lower --lr. The last good "
                                    f"checkpoint is {ckpt}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            state["step"] += 1
            losses.append(loss.item())
            if on_progress:
                on_progress({"event": "step", "epoch": epoch, "epochs": options.epochs, "step": step + 1,
                             "steps": steps_per_epoch, "loss": losses[-1]})
        val_rmse = pooled_rmse(model, val_pages, dev) if val_pages else None
        improved = val_rmse is None or state["best_rmse"] is None or val_rmse < state["best_rmse"]
        if improved:
            state["best_rmse"], state["best_epoch"] = val_rmse, epoch
        state["epoch"] = epoch
        state["history"].append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_rmse": val_rmse,
                                 "seconds": round(time.perf_counter() - started, 2)})
        info = {**base_info, "options": state["options"], "epoch": epoch, "val_rmse": val_rmse,
                "best_epoch": state["best_epoch"], "history": state["history"]}
        if improved:
            save_model(model, out, info)
        save_checkpoint(ckpt, model, optimizer, state, info)
        if on_progress:
            on_progress({"event": "epoch", **state["history"][-1], "epochs": options.epochs,
                         "best_rmse": state["best_rmse"], "best_epoch": state["best_epoch"], "improved": improved})
        if diverged(state["history"]):
            raise TrainingError(f"training diverged at epoch {epoch} (loss {state['history'][-1]['train_loss']:.4g}"
                                f"); the best model, from epoch {state['best_epoch']}, is in {out}. Start again "
                                f"with a lower --lr than {options.lr:g}")
        if options.patience and val_rmse is not None and epoch - state["best_epoch"] >= options.patience:
            state["stopped_early"] = True
            save_checkpoint(ckpt, model, optimizer, state, info)
            break
    return state


def train_from_folders(dirty_dir: str | Path | None, clean_dir: str | Path, out: str | Path, options: TrainOptions, *,
                       val_fraction: float = 0.2, val_dirty: str | Path | None = None,
                       val_clean: str | Path | None = None, on_progress: Callable[[dict], None] | None = None,
                       **train_kwargs) -> dict:
    """Pair, read and split the folders (by page group, or an explicit validation set), then `train`.

    Without `dirty_dir` the model learns from clean pages alone: every training patch is corrupted on the fly
    by the noise recipe (a random document degradation by default), and the validation pages are corrupted
    once, with a fixed seed, so that epochs are comparable."""
    clean_only = dirty_dir is None
    if clean_only:
        options.noise = options.noise or ["random"]
        options.synthetic_fraction = 1.0
        if any(spec.partition(":")[0].strip() == "transfer" for spec in options.noise):
            raise TrainingError("the 'transfer' noise needs real pairs: give --dirty too")
    elif not options.noise:
        options.synthetic_fraction = 0.0
    pages = load_pairs(find_pairs(clean_dir if clean_only else dirty_dir, clean_dir))
    groups = page_groups([clean for _, clean in pages])
    if val_dirty or val_clean:
        if not (val_dirty and val_clean):
            raise TrainingError("give both --val-dirty and --val-clean, or neither")
        train_pages, val_pages = pages, load_pairs(find_pairs(val_dirty, val_clean))
        split = {"validation": f"{val_dirty} + {val_clean}"}
    else:
        train_idx, val_idx = split_by_group(groups, val_fraction, options.seed)
        train_pages, val_pages = [pages[i] for i in train_idx], [pages[i] for i in val_idx]
        split = {"validation": f"page-group split, fraction {val_fraction}, seed {options.seed}",
                 "val_fraction": val_fraction,
                 "val_groups": len({groups[i] for i in val_idx}), "train_groups": len({groups[i] for i in train_idx})}
    if clean_only and not (val_dirty or val_clean):
        corrupt = _corruptor(options.noise, [])
        val_pages = [(corrupt(clean, np.random.default_rng([options.seed, 7, i])), clean)
                     for i, (_, clean) in enumerate(val_pages)]
        split["validation"] += ", corrupted once by the noise recipe"
    if on_progress:
        on_progress({"event": "data", "train_pages": len(train_pages), "val_pages": len(val_pages), **split})
    provenance = {"data": {"dirty": str(dirty_dir) if dirty_dir else "none (clean pages corrupted by the noise "
                           "recipe)", "clean": str(clean_dir), "pairs": len(pages), "page_groups": len(set(groups)),
                           **split}}
    provenance.update(train_kwargs.pop("provenance", None) or {})
    return train(train_pages, val_pages, out, options, provenance=provenance, on_progress=on_progress,
                 **train_kwargs)
