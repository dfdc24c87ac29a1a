"""A Keras-style training loop: fit / evaluate / predict, metrics, callbacks and History.

    history = fc.train.fit(model, train_loader, epochs=5, optimizer=opt, loss="cross_entropy",
                           val_data=val_loader, callbacks=[fc.train.EarlyStopping(patience=2)])
    history.plot("history.png")

Data is a `fastconv.data.DataLoader` (or any re-iterable of (inputs, targets) batches) or a tuple
of arrays `(x, y)`, which is batched here (`batch_size`, shuffled with `seed`). Progress:
verbose=0 silent, 1 a tqdm progress bar with the running loss and metrics, 2 one line per epoch;
the default 'auto' is 1 on a terminal and 2 otherwise (logs, CI).
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from fastconv.autograd import Tensor, no_grad
from fastconv.nn import functional as F

__all__ = ["fit", "evaluate", "predict", "History", "Callback", "EarlyStopping",
           "ModelCheckpoint", "LearningRateScheduler", "accuracy", "top_k_accuracy"]

_LOSSES = {
    "cross_entropy": F.cross_entropy, "categorical_crossentropy": F.cross_entropy,
    "sparse_categorical_crossentropy": F.cross_entropy, "nll": F.nll_loss,
    "binary_cross_entropy": F.binary_cross_entropy,
    "binary_cross_entropy_with_logits": F.binary_cross_entropy_with_logits,
    "mse": F.mse_loss, "mse_loss": F.mse_loss,
}


# ------------------------------------------------------------------------------------ metrics
def accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of correct predictions: argmax over classes for (N, C) outputs with C > 1;
    score > 0 (a logit) for a single output column; targets may be indices or one-hot."""
    targets = np.asarray(targets)
    if outputs.ndim == 2 and outputs.shape[1] > 1:
        pred = outputs.argmax(axis=1)
        if targets.ndim == 2:
            targets = targets.argmax(axis=1)
    else:
        pred = (outputs.reshape(len(outputs), -1)[:, 0] > 0).astype(np.int64)
        targets = targets.reshape(len(targets), -1)[:, 0].round()
    return float((pred == targets).mean()) if len(pred) else 0.0


def top_k_accuracy(k: int = 5) -> Callable:
    """A metric: the fraction of samples whose target is among the k highest outputs."""
    def metric(outputs: np.ndarray, targets: np.ndarray) -> float:
        top = np.argsort(-outputs, axis=1)[:, :k]
        return float((top == np.asarray(targets)[:, None]).any(axis=1).mean())
    metric.__name__ = f"top{k}_accuracy"
    return metric


def _metric_fns(metrics) -> Dict[str, Callable]:
    out = {}
    for m in metrics or ():
        if m in ("accuracy", "acc"):
            out["accuracy"] = accuracy
        elif isinstance(m, str) and m.startswith("top") and m.endswith("_accuracy"):
            out[m] = top_k_accuracy(int(m[3:-len("_accuracy")]))
        elif callable(m):
            out[getattr(m, "__name__", "metric")] = m
        else:
            raise ValueError(f"fit: unknown metric {m!r} (use 'accuracy', 'top5_accuracy' or a "
                             f"callable(outputs, targets) -> float)")
    return out


def _loss_fn(loss) -> Callable:
    if isinstance(loss, str):
        if loss not in _LOSSES:
            raise ValueError(f"fit: unknown loss {loss!r}; use one of {sorted(_LOSSES)} or a "
                             f"callable(outputs, targets) -> scalar Tensor")
        return _LOSSES[loss]
    if not callable(loss):
        raise TypeError(f"fit: loss must be a name or a callable, got {type(loss).__name__}")
    return loss


# -------------------------------------------------------------------------------------- data
def _batches(data, batch_size: int, shuffle: bool, seed, who: str):
    """A re-iterable of (x, y) batches from a loader or an (x, y) tuple of arrays."""
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], tuple):
        from fastconv.data import ArrayDataset, DataLoader
        x, y = (d.numpy() if isinstance(d, Tensor) else np.asarray(d) for d in data)
        if len(x) != len(y):
            raise ValueError(f"{who}: x and y have different lengths ({len(x)} and {len(y)})")
        return DataLoader(ArrayDataset(x, y), batch_size=batch_size, shuffle=shuffle, seed=seed)
    if isinstance(data, np.ndarray):
        from fastconv.data import ArrayDataset, DataLoader
        return DataLoader(ArrayDataset(data), batch_size=batch_size, shuffle=False)
    if not hasattr(data, "__iter__"):
        raise TypeError(f"{who}: data must be a DataLoader, an iterable of (x, y) batches or an "
                        f"(x, y) tuple of arrays, got {type(data).__name__}")
    return data


def _to_tensor(a, device: Optional[str]) -> Tensor:
    t = a if isinstance(a, Tensor) else Tensor(np.asarray(a) if not hasattr(a, "dtype") else a)
    return t.to(device) if device else t


def _split_batch(batch, who: str):
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(f"{who}: each batch must be an (inputs, targets) pair, got "
                     f"{type(batch).__name__}")


def _np(a) -> np.ndarray:
    return a.numpy() if isinstance(a, Tensor) else np.asarray(a)


# ---------------------------------------------------------------------------------- callbacks
class Callback:
    """Base class: override the hooks you need. `self.model` and `self.optimizer` are set when
    training begins; set `self.stop_training = True` to stop."""
    model = optimizer = None
    stop_training = False

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch: int, logs=None): pass
    def on_epoch_end(self, epoch: int, logs=None): pass
    def on_batch_end(self, batch: int, logs=None): pass


def _better(mode: str, monitor: str):
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    return (lambda a, b, d: a < b - d) if mode == "min" else (lambda a, b, d: a > b + d), mode


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs;
    optionally restore the best weights at the end."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: str = "auto", restore_best_weights: bool = False):
        self.monitor, self.min_delta, self.patience = monitor, abs(min_delta), patience
        self.better, self.mode = _better(mode, monitor)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.best_state, self.stopped_epoch = None, 0, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"EarlyStopping: monitor {self.monitor!r} is not among the logged "
                           f"values {sorted(logs or {})}")
        if self.best is None or self.better(value, self.best, self.min_delta):
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_state = copy.deepcopy(dict(self.model.state_dict()))
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stop_training, self.stopped_epoch = True, epoch

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_state is not None:
            self.model.load_state_dict(self.best_state)


class ModelCheckpoint(Callback):
    """Save the model's state dict after an epoch (`filepath` may contain {epoch} and logged
    names, e.g. "ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"; format by extension, see
    fastconv.save); with save_best_only, only when `monitor` improves."""

    def __init__(self, filepath: str, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto"):
        self.filepath, self.monitor, self.save_best_only = str(filepath), monitor, save_best_only
        self.better, _ = _better(mode, monitor)
        self.best = None
        self.saved: List[str] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                raise KeyError(f"ModelCheckpoint: monitor {self.monitor!r} is not among the "
                               f"logged values {sorted(logs)}")
            if self.best is not None and not self.better(value, self.best, 0.0):
                return
            self.best = value
        from fastconv.io import save
        path = self.filepath.format(epoch=epoch + 1, **logs)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save(self.model.state_dict(), path)
        self.saved.append(path)


class LearningRateScheduler(Callback):
    """Step a fastconv.optim scheduler once per epoch (ReduceLROnPlateau gets `monitor`)."""

    def __init__(self, scheduler, monitor: str = "val_loss"):
        self.scheduler, self.monitor = scheduler, monitor

    def on_epoch_end(self, epoch, logs=None):
        if type(self.scheduler).__name__ == "ReduceLROnPlateau":
            value = (logs or {}).get(self.monitor)
            if value is None:
                raise KeyError(f"LearningRateScheduler: monitor {self.monitor!r} is not logged")
            self.scheduler.step(value)
        else:
            self.scheduler.step()


class History(Callback):
    """Per-epoch logs: history.history = {'loss': [...], 'accuracy': [...], 'val_loss': ...}."""

    def __init__(self):
        self.history: Dict[str, List[float]] = {}
        self.epoch: List[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def plot(self, path: str, title: Optional[str] = None) -> str:
        """Loss and metric curves (train and validation) to a PNG; needs matplotlib."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("History.plot needs matplotlib: pip install \"fastconv[bench]\" "
                              "(or pip install matplotlib)") from None
        names = [k for k in self.history if not k.startswith("val_") and k != "lr"]
        fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
        epochs = [e + 1 for e in self.epoch]
        for ax, name in zip(axes[0], names):
            ax.plot(epochs, self.history[name], "o-", label=f"train {name}")
            if f"val_{name}" in self.history:
                ax.plot(epochs, self.history[f"val_{name}"], "s--", label=f"val {name}")
            ax.set_xlabel("epoch")
            ax.set_title(name)
            ax.grid(alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


# ------------------------------------------------------------------------------------ loops
class _Progress:
    """tqdm bar (verbose=1) or one line per epoch (verbose=2) or nothing (0)."""

    def __init__(self, verbose, epochs: int, steps: Optional[int]):
        if verbose == "auto":
            verbose = 1 if sys.stderr.isatty() else 2
        if verbose not in (0, 1, 2):
            raise ValueError(f"fit: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        self.verbose, self.epochs, self.steps, self.bar = verbose, epochs, steps, None

    def begin(self, epoch: int) -> None:
        self.start = time.perf_counter()
        if self.verbose == 1:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.steps, desc=f"Epoch {epoch + 1}/{self.epochs}",
                            unit="batch", leave=True, dynamic_ncols=True)

    def update(self, logs: Dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)

    def end(self, epoch: int, logs: Dict[str, float]) -> None:
        text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text)
            self.bar.close()
        elif self.verbose == 2:
            print(f"Epoch {epoch + 1}/{self.epochs} - {time.perf_counter() - self.start:.1f}s - "
                  f"{text}", flush=True)


def _run_epoch(model, batches, loss_fn, metric_fns, optimizer, device, progress=None,
               callbacks=(), grad_clip=None):
    """One pass; trains when an optimizer is given. Returns the sample-weighted mean loss and
    metrics."""
    totals: Dict[str, float] = {}
    seen = 0
    for i, batch in enumerate(batches):
        xb, yb = _split_batch(batch, "fit" if optimizer else "evaluate")
        x, y = _to_tensor(xb, device), _np(yb)
        target = y if device in (None, "cpu") else _to_tensor(y, device).data
        if optimizer is not None:
            out = model(x)
            loss = loss_fn(out, target)
            optimizer.zero_grad()
            loss.backward()
            if grad_clip is not None:
                from fastconv.optim import clip_grad_norm_
                clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                grad_clip)
            optimizer.step()
        else:
            with no_grad():
                out = model(x)
                loss = loss_fn(out, target)
        n = len(y)
        value = float(loss.item())
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss became {value} at batch {i}; lower the learning "
                                     f"rate or check the data")
        outputs = out.numpy()
        totals["loss"] = totals.get("loss", 0.0) + value * n
        for name, fn in metric_fns.items():
            totals[name] = totals.get(name, 0.0) + fn(outputs, y) * n
        seen += n
        logs = {k: v / seen for k, v in totals.items()}
        if progress is not None:
            progress.update(logs)
        for cb in callbacks:
            cb.on_batch_end(i, logs)
    if seen == 0:
        raise ValueError("the data produced no batches (empty dataset, or drop_last with fewer "
                         "samples than batch_size)")
    return {k: v / seen for k, v in totals.items()}


def fit(model, train_data, epochs: int = 1, optimizer=None, loss="cross_entropy", val_data=None,
        metrics: Sequence = ("accuracy",), verbose: Union[int, str] = "auto",
        callbacks: Sequence[Callback] = (), batch_size: int = 32, shuffle: bool = True,
        seed: Optional[int] = None, device: Optional[str] = None,
        grad_clip: Optional[float] = None) -> History:
    """Train `model` for `epochs` epochs and return its History.

    Args:
        model: a fastconv.nn.Module mapping an input batch to outputs.
        train_data: a DataLoader / iterable of (x, y) batches, or an (x, y) tuple of arrays.
        epochs: passes over train_data.
        optimizer: a fastconv.optim optimizer (default: Adam(lr=1e-3) over the trainable
            parameters).
        loss: 'cross_entropy', 'binary_cross_entropy_with_logits', 'mse', ... or a callable
            (outputs, targets) -> scalar Tensor.
        val_data: evaluated after every epoch (logged as val_loss, val_<metric>).
        metrics: 'accuracy', 'top5_accuracy' or callables (outputs, targets) -> float.
        verbose: 0, 1 (progress bar), 2 (a line per epoch) or 'auto'.
        callbacks: EarlyStopping, ModelCheckpoint, LearningRateScheduler, your own Callbacks.
        batch_size, shuffle, seed: used only when the data are arrays.
        device: 'cpu' or 'cuda': where batches are moved (move the model yourself, or let this
            do model.to(device)).
        grad_clip: clip the global gradient norm to this value before each step.
    Returns:
        History, with .history (dict of per-epoch lists) and .plot(path).
    Example:
        >>> hist = fit(model, (x_train, y_train), epochs=3, optimizer=SGD(model.parameters(), 0.1))
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
    if device:
        model.to(device)
    if optimizer is None:
        from fastconv.optim import Adam
        optimizer = Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn, metric_fns = _loss_fn(loss), _metric_fns(metrics)
    train_batches = _batches(train_data, batch_size, shuffle, seed, "fit")
    val_batches = None if val_data is None else _batches(val_data, batch_size, False, None, "fit")
    history = History()
    callbacks = list(callbacks) + [history]
    for cb in callbacks:
        cb.model, cb.optimizer = model, optimizer
        cb.stop_training = False
        cb.on_train_begin()
    try:
        steps = len(train_batches)
    except TypeError:
        steps = None
    progress = _Progress(verbose, epochs, steps)
    for epoch in range(epochs):
        if hasattr(train_batches, "set_epoch"):
            train_batches.set_epoch(epoch)
        for cb in callbacks:
            cb.on_epoch_begin(epoch)
        model.train()
        progress.begin(epoch)
        logs = _run_epoch(model, train_batches, loss_fn, metric_fns, optimizer, device, progress,
                          callbacks, grad_clip)
        if val_batches is not None:
            model.eval()
            val = _run_epoch(model, val_batches, loss_fn, metric_fns, None, device)
            logs.update({f"val_{k}": v for k, v in val.items()})
        logs["lr"] = float(optimizer.param_groups[0]["lr"])
        progress.end(epoch, logs)
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)
        if any(cb.stop_training for cb in callbacks):
            break
    model.eval()
    for cb in callbacks:
        cb.on_train_end()
    return history


def evaluate(model, data, loss="cross_entropy", metrics: Sequence = ("accuracy",),
             batch_size: int = 64, device: Optional[str] = None) -> Dict[str, float]:
    """Mean loss and metrics over `data` (a loader or an (x, y) tuple), in eval mode."""
    with model.evaluating():
        return _run_epoch(model, _batches(data, batch_size, False, None, "evaluate"),
                          _loss_fn(loss), _metric_fns(metrics), None, device)


def predict(model, data, batch_size: int = 64, device: Optional[str] = None) -> np.ndarray:
    """Model outputs for `data` (an array of inputs, a loader, or an (x, y) tuple) as one numpy
    array, in eval mode without recording gradients."""
    outputs = []
    with model.evaluating(), no_grad():
        for batch in _batches(data, batch_size, False, None, "predict"):
            xb = batch[0] if isinstance(batch, (tuple, list)) else batch
            outputs.append(model(_to_tensor(xb, device)).numpy())
    if not outputs:
        raise ValueError("predict: the data produced no batches")
    return np.concatenate(outputs)
