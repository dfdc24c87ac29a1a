"""Transfer learning: feature extraction with a frozen base, then fine-tuning of the top blocks.

    model = fc.models.efficientnet_lite0(pretrained=True)
    transfer.prepare_feature_extraction(model, num_classes=2)   # base frozen, new trainable head
    feats = transfer.extract_features(model, x_train)           # the base runs once
    ...train the head on feats (transfer.HeadOnFeatures)...
    transfer.unfreeze_top(model, 2)                             # top 2 blocks trainable, BN stays
    ...fit(model, ...) with a low learning rate...              # in inference mode

`finetune()` runs both phases with the usual recipe (Keras' and timm's guides): Adam on the head
with the base frozen (features computed once and cached), then the top blocks unfrozen with a
10x lower learning rate for the base than for the head. A frozen BatchNorm stays in inference
mode through `model.train()` (see Module.freeze); unfreeze_top keeps BatchNorm layers that way
by default (`train_bn=False`), the setting that avoids destroying pretrained statistics with
small batches.
"""
from __future__ import annotations

import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from fastconv.autograd import Tensor, no_grad
from fastconv.nn.container import ModuleList, Sequential
from fastconv.nn.module import Module
from fastconv.nn.norm import _BatchNorm

__all__ = ["blocks", "prepare_feature_extraction", "unfreeze_top", "extract_features",
           "HeadOnFeatures", "finetune"]


def _has_params(m: Module) -> bool:
    return any(True for _ in m.parameters())


def blocks(model: Module) -> List[Tuple[str, Module]]:
    """The units of the backbone from input to output, as (name, module): what unfreeze_top
    counts. A model may define `transfer_blocks()`; otherwise the children, with containers
    (ResNet's layer1..4, EfficientNet's _blocks, MobileNetV2's features) expanded, modules
    without parameters and the classifier left out, and a BatchNorm merged into the unit
    before it (a conv and its BN are one unit)."""
    if hasattr(model, "transfer_blocks"):
        return list(model.transfer_blocks())
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    units: List[Tuple[str, List[Module]]] = []

    def visit(prefix: str, m: Module):
        for name, child in m.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if child is classifier or not _has_params(child):
                continue
            if isinstance(child, (Sequential, ModuleList)):
                visit(full, child)
            elif isinstance(child, _BatchNorm) and units:
                units[-1][1].append(child)
            else:
                units.append((full, [child]))

    visit("", model)
    return [(name, ms[0] if len(ms) == 1 else ModuleList(ms)) for name, ms in units]


def prepare_feature_extraction(model: Module, num_classes: int) -> Module:
    """Freeze the whole model (BatchNorm in inference mode) and put a new, trainable
    classifier for num_classes on it (model.reset_classifier)."""
    model.freeze()
    model.reset_classifier(num_classes)
    model.get_classifier().unfreeze()
    return model


def unfreeze_top(model: Module, n: int, train_bn: bool = False) -> List[str]:
    """Make the parameters of the top n backbone blocks (see blocks()) trainable. BatchNorm
    layers in them get trainable affine parameters but keep using their running statistics
    unless train_bn=True. Returns the names of the unfrozen blocks."""
    units = blocks(model)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(units):
        raise ValueError(f"unfreeze_top: n must be an int in [0, {len(units)}] (the model has "
                         f"{len(units)} blocks), got {n!r}")
    chosen = units[len(units) - n:] if n else []
    for _, unit in chosen:
        unit.unfreeze()
        if not train_bn:
            for m in unit.modules():
                if isinstance(m, _BatchNorm):
                    m.frozen = True
    return [name for name, _ in chosen]


def _verbosity(verbose, op: str) -> int:
    """0, 1 (progress bars) or 2 (lines); 'auto' is 1 in a terminal (stderr is a tty), else 2."""
    if verbose == "auto":
        return 1 if sys.stderr.isatty() else 2
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"{op}: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return verbose


def _bar(total: Optional[int], desc: str, unit: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=True, dynamic_ncols=True)


def extract_features(model: Module, data, batch_size: int = 64,
                     device: Optional[str] = None, verbose=0) -> np.ndarray:
    """model.forward_features over an array of inputs (N, C, H, W) or a loader of (x, y)
    batches, in eval mode without gradients; returns the stacked features as numpy.
    verbose: 0 silent, 1 a progress bar over the batches and a summary line, 2 the summary line
    only, 'auto' 1 in a terminal else 2."""
    verbose = _verbosity(verbose, "extract_features")
    start, out, bar = time.perf_counter(), [], None
    with model.evaluating(), no_grad():
        if isinstance(data, np.ndarray):
            chunks = (data[i:i + batch_size] for i in range(0, len(data), batch_size))
            total = -(-len(data) // batch_size)
        else:
            chunks = (b[0] if isinstance(b, (tuple, list)) else b for b in data)
            total = len(data) if hasattr(data, "__len__") else None
        if verbose == 1:
            bar = _bar(total, "features", "batch")
        try:
            for xb in chunks:
                x = Tensor(xb) if not isinstance(xb, Tensor) else xb
                out.append(model.forward_features(x.to(device) if device else x).numpy())
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    if not out:
        raise ValueError("extract_features: no inputs")
    features = np.concatenate(out)
    if verbose:
        print(f"features: {len(features)} inputs -> {features.shape[1:]} each, "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    return features


class _EpochBar:
    """A training.Callback-shaped progress bar with one step per epoch (the head phase runs many
    short epochs; a bar per epoch would be noise)."""
    model = optimizer = None
    stop_training = False

    def __init__(self, epochs: int, desc: str):
        self.bar = _bar(epochs, desc, "epoch")

    def on_train_begin(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass

    def on_epoch_end(self, epoch, logs=None):
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.4f}" for k, v in (logs or {}).items() if k != "lr"},
                             refresh=True)

    def on_train_end(self, logs=None):
        self.bar.close()


def _summary(phase: str, history, seconds: float) -> None:
    logs = {k: v[-1] for k, v in history.history.items() if v and k != "lr"}
    epochs = len(next(iter(history.history.values()), []))
    print(f"{phase}: {epochs} epoch{'' if epochs == 1 else 's'}, {seconds:.1f} s - " +
          " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)


class HeadOnFeatures(Module):
    """The model's head (pooling, dropout, classifier: model.forward_head) as a module over
    cached backbone features, to train the head without re-running the frozen base."""

    def __init__(self, model: Module):
        super().__init__()
        self.model = model

    def forward(self, features):
        return self.model.forward_head(features)


def finetune(model: Module, train: Tuple[np.ndarray, np.ndarray],
             val: Tuple[np.ndarray, np.ndarray], num_classes: int, head_epochs: int = 5,
             finetune_epochs: int = 3, unfreeze: int = 2, head_lr: float = 1e-3,
             finetune_lr: float = 1e-4, batch_size: int = 32, seed: int = 0,
             device: Optional[str] = None, verbose="auto", transform=None) -> Dict:
    """Feature extraction, then fine-tuning, on preprocessed arrays.

    Args:
        model: a zoo model (forward_features / forward_head / reset_classifier).
        train, val: (x, y) with x (N, 3, H, W) float32 already normalised for the weights.
        num_classes: classes of the new head.
        head_epochs: epochs of head training on cached features (base frozen).
        finetune_epochs: epochs with the top `unfreeze` blocks trainable (0 skips the phase).
        head_lr, finetune_lr: Adam learning rates of the head phase and of the unfrozen base in
            the fine-tuning phase (the head then trains at 10x finetune_lr).
        transform: per-sample augmentation for the fine-tuning phase (fastconv.data transforms).
        verbose: 0 silent; 1 progress bars (feature extraction, the head's epochs, each
            fine-tuning epoch) and a summary line per phase; 2 the summary lines and a line per
            fine-tuning epoch; 'auto' (default) 1 in a terminal, else 2.
    Returns:
        {"head": History, "finetune": History or None, "val_accuracy": float,
         "unfrozen": [block names]}
    """
    from fastconv import optim
    from fastconv import train as training
    from fastconv.data import ArrayDataset, DataLoader

    (x_train, y_train), (x_val, y_val) = train, val
    prepare_feature_extraction(model, num_classes)
    if device:
        model.to(device)
    # phase 1: the frozen base runs once; the head trains on its cached features
    verbose = _verbosity(verbose, "finetune")
    f_train = extract_features(model, x_train, batch_size, device, verbose)
    f_val = extract_features(model, x_val, batch_size, device, verbose)
    head = HeadOnFeatures(model)
    head_opt = optim.Adam([p for p in model.parameters() if p.requires_grad], lr=head_lr)
    start = time.perf_counter()
    head_hist = training.fit(           # one bar over the epochs: a bar or line each is noise
        head, DataLoader(ArrayDataset(f_train, y_train), batch_size, shuffle=True, seed=seed),
        epochs=head_epochs, optimizer=head_opt, val_data=(f_val, y_val), verbose=0,
        callbacks=[_EpochBar(head_epochs, "head")] if verbose == 1 and head_epochs else (),
        device=device)
    if verbose:
        _summary("head on cached features", head_hist, time.perf_counter() - start)
    result = {"head": head_hist, "finetune": None, "unfrozen": []}
    # phase 2: unfreeze the top blocks; base at finetune_lr, head at 10x
    if finetune_epochs > 0 and unfreeze > 0:
        result["unfrozen"] = unfreeze_top(model, unfreeze)
        head_params = {id(p) for p in model.get_classifier().parameters()}
        base = [p for p in model.parameters() if p.requires_grad and id(p) not in head_params]
        opt = optim.Adam([{"params": base, "lr": finetune_lr},
                          {"params": list(model.get_classifier().parameters()),
                           "lr": finetune_lr * 10}])
        loader = DataLoader(ArrayDataset(x_train, y_train, transform=transform), batch_size,
                            shuffle=True, seed=seed + 1)
        start = time.perf_counter()
        result["finetune"] = training.fit(model, loader, epochs=finetune_epochs, optimizer=opt,
                                          val_data=(x_val, y_val), verbose=verbose,
                                          batch_size=batch_size, device=device)
        if verbose:
            _summary(f"fine-tuning {', '.join(result['unfrozen'])}", result["finetune"],
                     time.perf_counter() - start)
    result["val_accuracy"] = training.evaluate(model, (x_val, y_val), batch_size=batch_size,
                                               device=device)["accuracy"]
    return result
