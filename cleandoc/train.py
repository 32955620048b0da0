"""The training loop: random patches, AdamW with warm-up and cosine decay, validation on whole pages each
epoch, the best model kept, and an atomic checkpoint every epoch that `resume` continues from."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from . import __version__
from .api import Cleaner
from .data import (
    PageSet,
    Pair,
    PairingError,
    PatchSampler,
    Source,
    Split,
    find_pages,
    find_pairs,
    held_out_pairs,
    load_source_pages,
    page_groups,
    split_by_group,
)
from .evaluate import pooled_rmse
from .imageio import to_uint8, to_unit_float
from .models import build_model, count_parameters, set_ink_bias
from .noise import NoiseBank, make_corruptor, parse_recipe
from .options import LOSSES, TrainOptions
from .runtime import cpu_has_native_bf16, pick_device, usable_cores
from .store import ModelFileError, load_checkpoint, load_model, save_checkpoint, save_model


class TrainingError(Exception):
    """An expected failure of a training run (bad options, nothing to resume, diverged loss)."""


def checkpoint_path(out: Path) -> Path:
    """Where a run writing `out` keeps its resumable checkpoint."""
    return out.with_name(out.name.removesuffix(".safetensors") + ".ckpt.safetensors")


def _errors(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Each pixel's loss against a target in [0, 1]."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if kind == "l1":
        return (torch.sigmoid(logits) - target).abs()
    return (torch.sigmoid(logits) - target).square()


def _loss(model: torch.nn.Module, dirty: torch.Tensor, clean: torch.Tensor, kind: str,
          ink_weight: float = 1.0, binary: torch.Tensor | None = None, teacher: torch.nn.Module | None = None,
          teacher_weight: float = 0.0) -> torch.Tensor:
    """The reconstruction loss, each target ink pixel (darker than half) counting `ink_weight` times. `binary`: for
    each patch, 1 when its page's target is an ink mask, which asks a model that has a binary style for it. With a
    `teacher`, `teacher_weight` of each pixel's loss is against the teacher network's page (before its ink bias,
    which the student's config carries too), in the same style."""
    logits = model.logits(dirty, binary if model.binary_style else None).float()
    errors = _errors(logits, clean, kind)
    if teacher is not None:
        with torch.no_grad():
            taught = torch.sigmoid(teacher.logits(dirty, binary if teacher.binary_style else None).float())
        errors = (1 - teacher_weight) * errors + teacher_weight * _errors(logits, taught, kind)
    if ink_weight == 1:
        return errors.mean()
    weights = torch.where(clean < 0.5, ink_weight, 1.0)
    return (errors * weights).sum() / weights.sum()


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
        transfer = any(name == "transfer" for name, _ in recipe)
        if transfer and not real_pages:
            raise ValueError("the 'transfer' noise needs real pairs to take noise layers from")
        bank = NoiseBank.from_pairs([(to_unit_float(d), to_unit_float(c)) for d, c in real_pages]) if transfer else None
        return make_corruptor(recipe, bank)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None


def _teacher(options: TrainOptions, model: torch.nn.Module, device: torch.device) -> torch.nn.Module | None:
    """The --teacher network, frozen on the training device; it must have every style of output the student
    learns."""
    if not options.teacher:
        return None
    if not 0 < options.teacher_weight <= 1:
        raise TrainingError(f"--teacher-weight must be above 0 and at most 1, got {options.teacher_weight:g}")
    teacher = load_model(options.teacher, device)[0].eval().requires_grad_(False)
    if model.binary_style and not teacher.binary_style:
        raise TrainingError(f"{options.teacher}: the teacher has no binary style for the student's to learn from")
    return teacher.to(memory_format=torch.channels_last)


class _Batches(torch.utils.data.Dataset):
    """The run's batches by step number, each drawn from its own random stream: the same patches whether one
    process or several draw them."""

    def __init__(self, sampler: PatchSampler, batch_size: int, seed: int, steps_per_epoch: int):
        self.sampler, self.batch_size, self.seed, self.steps_per_epoch = sampler, batch_size, seed, steps_per_epoch

    def __getitem__(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        epoch, within = divmod(step, self.steps_per_epoch)
        return self.sampler.batch(self.batch_size, np.random.default_rng([self.seed, epoch + 1, within]))


def _one_thread(_worker: int) -> None:
    """A patch worker runs one OpenCV thread: the workers are the parallelism."""
    cv2.setNumThreads(1)


# Patch workers start from a fresh process, not a fork of this one: a fork inherits OpenCV's and torch's thread
# pools in whatever state their threads were, and can hang on their locks.
_WORKER_START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def default_loader_workers(device: torch.device) -> int:
    """Processes that cut and corrupt patches while the model trains. On a CPU none: the model needs every core.
    Beside a GPU one per core but one, up to 8: a step there takes less time than cutting its batch on one core."""
    return 0 if device.type == "cpu" else max(0, min(8, usable_cores() - 1))


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


def train(train_sets: list[PageSet] | list[tuple[np.ndarray, np.ndarray]],
          val_pages: list[tuple[np.ndarray, np.ndarray]] | dict[str, list[tuple[np.ndarray, np.ndarray]]],
          out: str | Path, options: TrainOptions, *,
          init: str | Path | None = None, resume: bool = False, device: str = "auto", provenance: dict | None = None,
          on_progress: Callable[[dict], None] | None = None, corruptor: Callable | None = None,
          workers: int | None = None) -> dict:
    """Train and write the best model (by validation RMSE) to `out`; return the final training state.

    train_sets: one PageSet per source (or a plain list of (dirty, clean) pages: one source).
    val_pages: (dirty, clean) pages, or such lists by the name of their source, whose RMSE each epoch also records
    (`val_by_source`): the pooled figure alone hides how the smaller sources fare.
    on_progress receives {"event": "step", ...} after each step and {"event": "epoch", ...} after each epoch.
    corruptor: the corruption process of the noise recipe, when the caller has already built it (`_corruptor`).
    workers: processes cutting patches beside the model (default: `default_loader_workers`); the patches drawn do
    not depend on it.
    """
    if train_sets and not isinstance(train_sets[0], PageSet):
        train_sets = [PageSet(list(train_sets))]
    val_sets = val_pages if isinstance(val_pages, dict) else {"validation": list(val_pages)}
    val_sets = {name: pages for name, pages in val_sets.items() if pages}
    out = Path(out)
    ckpt = checkpoint_path(out)
    dev = pick_device(device)
    if options.epochs == 0 and (resume or not init):
        raise TrainingError("--epochs 0 writes the --init model with this run's settings (such as --ink-bias) "
                            "without training it: give --init")
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
            model = load_model(init)[0] if init else build_model(options.model)
            set_ink_bias(model, model.ink_bias if options.ink_bias is None else options.ink_bias,
                         model.faint_ink_bias if options.faint_ink_bias is None else options.faint_ink_bias)
            if options.binary_style:
                model.add_binary_style()
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        options = replace(options, model=model.config)
        state = {"epoch": 0, "step": 0, "best_rmse": None, "best_epoch": 0, "history": [],
                 "options": asdict(options)}
        optimizer_state = None
    model = model.to(dev, memory_format=torch.channels_last).train()
    base_info = {"trained_by": f"cleandoc {__version__}", "parameters": count_parameters(model),
                 "train_pages": sum(len(page_set.pages) for page_set in train_sets),
                 "val_pages": sum(map(len, val_sets.values())), **(provenance or {})}
    if init and not resume:
        state.setdefault("init", str(init))
    if state.get("init"):
        base_info["initialised_from"] = state["init"]

    def validate() -> tuple[float | None, dict[str, float]]:
        """The pooled validation RMSE (what picks the best epoch) and each source's."""
        cleaner = Cleaner(model, device=dev)
        by_source = {name: pooled_rmse(cleaner, pages) for name, pages in val_sets.items()}
        if not by_source:
            return None, by_source
        pixels = {name: sum(clean.size for _, clean in pages) for name, pages in val_sets.items()}
        pooled = math.sqrt(sum(by_source[name] ** 2 * pixels[name] for name in by_source) / sum(pixels.values()))
        return pooled, by_source

    def record(epoch: int, val_rmse: float | None) -> dict:
        """What the model file says of the run so far."""
        return {**base_info, "options": state["options"], "epoch": epoch, "val_rmse": val_rmse,
                "best_epoch": state["best_epoch"], "history": state["history"]}

    if options.epochs == 0:  # no training: the starting model as it is, with this run's settings, validated
        val_rmse = validate()[0]
        state.update(best_rmse=val_rmse, best_epoch=0)
        save_model(model, out, record(0, val_rmse))
        return state
    teacher = _teacher(options, model, dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    if corruptor is None and options.noise:
        corruptor = _corruptor(options.noise, [page for page_set in train_sets if not page_set.synthetic_only
                                               for page in page_set.pages])
    try:
        sampler = PatchSampler(train_sets, options.patch_size, max_scale=options.max_scale, synthesize=corruptor,
                               synthetic_fraction=options.synthetic_fraction)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    steps_per_epoch = max(1, options.patches_per_epoch // options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    amp = options.amp and (dev.type == "cuda" or cpu_has_native_bf16())
    precision = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    torch.backends.cudnn.benchmark = dev.type == "cuda"  # patches have one fixed shape: let cuDNN pick its kernels

    workers = default_loader_workers(dev) if workers is None else workers
    loader = torch.utils.data.DataLoader(
        _Batches(sampler, options.batch_size, options.seed, steps_per_epoch), batch_size=None,
        sampler=range(state["step"], total_steps), num_workers=workers, pin_memory=dev.type == "cuda",
        worker_init_fn=_one_thread if workers else None, prefetch_factor=4 if workers else None,
        multiprocessing_context=_WORKER_START if workers else None)
    batches = iter(loader)
    while state["epoch"] < options.epochs and not state.get("stopped_early"):
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        torch.manual_seed(options.seed * 100_003 + epoch)
        model.train()
        losses = []
        for step in range(steps_per_epoch):
            dirty, clean, binary = (a.to(dev, non_blocking=True) for a in next(batches))
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(options, state["step"], total_steps)
            with precision():
                loss = _loss(model, dirty, clean, options.loss, options.ink_weight, binary, teacher,
                             options.teacher_weight)
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
        val_rmse, val_by_source = validate()
        improved = val_rmse is None or state["best_rmse"] is None or val_rmse < state["best_rmse"]
        if improved:
            state["best_rmse"], state["best_epoch"] = val_rmse, epoch
        state["epoch"] = epoch
        state["history"].append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_rmse": val_rmse,
                                 **({"val_by_source": val_by_source} if len(val_by_source) > 1 else {}),
                                 "seconds": round(time.perf_counter() - started, 2)})
        info = record(epoch, val_rmse)
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


def _read_source(source: Source) -> tuple[list[Pair], list[tuple[np.ndarray, np.ndarray]]]:
    """A source's files and (dirty, clean) pages, 8-bit; a folder of clean pages gives each page as both."""
    pairs = find_pairs(source.dirty, source.clean) if source.dirty else find_pages(source.clean)
    return pairs, load_source_pages(pairs)


def _source_pages(source: Source, val_fraction: float, sealed_fraction: float, seed: int
                  ) -> tuple[list[Pair], list, list[int], Split]:
    """A source's files, pages (8-bit), page groups and split."""
    pairs, pages = _read_source(source)
    groups = page_groups([clean for _, clean in pages])
    split = split_by_group(groups, val_fraction if source.val is None else source.val, seed,
                           sealed_fraction if source.sealed is None else source.sealed)
    return pairs, pages, groups, split


def _pages_held_out_by(init: str | Path) -> set[Path]:
    """The dirty pages that the run which made `init` held out (validation and sealed), where its recorded
    folders are here: fine-tuning on them would leave its held-out figures overstated from then on."""
    try:
        info = load_model(init)[1].provenance
        pairs = held_out_pairs(info, "val") + held_out_pairs(info, "sealed")
    except (ModelFileError, PairingError):  # an unreadable file is train's to report; absent data cannot leak
        return set()
    return {pair.dirty.resolve() for pair in pairs}


def train_from_sources(sources: list[Source], out: str | Path, options: TrainOptions, *,
                       val_sources: list[Source] = (), on_progress: Callable[[dict], None] | None = None,
                       **train_kwargs) -> dict:
    """Read every source, split each by page group (its own fractions, or the options' `val_fraction` and
    `sealed_fraction`), add the `val_sources` whole to validation, then `train`. The file records each source and
    its split, so that its validation and sealed pages can be found again (`data.held_out_pairs`).

    A source of clean pages alone has every training patch corrupted on the fly by the noise recipe (a random
    document degradation when none is given), and its validation pages are corrupted once, with a fixed seed,
    so that epochs are comparable."""
    if not sources:
        raise TrainingError("no training sources: give --pairs DIRTY:CLEAN or --pages CLEAN")
    if not options.noise and any(source.dirty is None for source in sources):
        options = replace(options, noise=["random"])
    train_sets, recorded = [], []
    val_pages: dict[str, list] = {}  # by source, named as given
    synthetic_val: list[tuple[str, np.ndarray]] = []
    init = train_kwargs.get("init")
    held_out = set() if train_kwargs.get("resume") else {
        page for model in (init, options.teacher) if model for page in _pages_held_out_by(model)}
    for source in sources:
        pairs, pages, groups, split = _source_pages(source, options.val_fraction, options.sealed_fraction,
                                                    options.seed)
        if leaked := [pairs[i].dirty for i in split.train if pairs[i].dirty.resolve() in held_out]:
            raise TrainingError(f"{source.dirty or source.clean}: {len(leaked)} of its training pages (such as "
                                f"{leaked[0].name}) were held out by the run that made "
                                f"{' or '.join(str(m) for m in (init, options.teacher) if m)}: split as it did "
                                "(the same --seed and held-out fractions) or train afresh")
        train_sets.append(PageSet([pages[i] for i in split.train], source.weight, source.dirty is None))
        name = str(source.dirty or source.clean)
        if source.dirty is None:
            synthetic_val += [(name, pages[i][1]) for i in split.val]
        else:
            val_pages.setdefault(name, []).extend(pages[i] for i in split.val)
        recorded.append({**source.describe(), "pages": len(pages), "page_groups": len(set(groups)),
                         "train_pages": len(split.train), "val_pages": len(split.val),
                         "sealed_pages": len(split.sealed)})
    corrupt = None
    if synthetic_val:  # built once, and handed to `train` for the training patches too
        corrupt = _corruptor(options.noise, [p for s in train_sets if not s.synthetic_only for p in s.pages])
        for i, (name, clean) in enumerate(synthetic_val):
            dirty = to_uint8(corrupt(to_unit_float(clean), np.random.default_rng([options.seed, 7, i])))
            val_pages.setdefault(name, []).append((dirty, clean))
    for source in val_sources:
        pages = _read_source(source)[1]
        val_pages.setdefault(str(source.dirty), []).extend(pages)
        recorded.append({**source.describe(), "pages": len(pages), "use": "validation"})
    data = {"sources": recorded, "seed": options.seed, "val_fraction": options.val_fraction,
            "sealed_fraction": options.sealed_fraction}
    if on_progress:
        on_progress({"event": "data", "train_pages": sum(len(s.pages) for s in train_sets),
                     "val_pages": sum(map(len, val_pages.values())), "sources": recorded})
    provenance = {"data": data, **(train_kwargs.pop("provenance", None) or {})}
    return train(train_sets, val_pages, out, options, provenance=provenance, on_progress=on_progress,
                 corruptor=corrupt, **train_kwargs)
