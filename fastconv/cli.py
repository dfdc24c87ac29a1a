"""The `fastconv` command.

    fastconv finetune [--data DIR] [--model M]  transfer learning (default: pretrained
                                               EfficientNet-Lite0 on scikit-image's lfw_subset)
    fastconv predict [IMAGE]                   top-5 ImageNet classes (default photo: 'chelsea')
    fastconv summary MODEL                     layer table of a zoo model
    fastconv info                              version, instruction set, threads, CUDA
    fastconv edges [--image PATH] [--out PNG]  Laplacian edge map of a photo (default: scikit-image's
                                               'camera') computed with fastconv's conv2d
    fastconv bench [--device cpu|cuda] [--quick] kernels vs PyTorch on the layer suite

`edges` needs the `examples` extra (scikit-image for the bundled photo, Pillow to read and write
images): pip install "fastconv[examples]".
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from typing import Optional, Sequence

import numpy as np

# The 8-neighbour Laplacian: zero on flat and linearly varying regions, large across edges.
LAPLACIAN = np.array([[-1, -1, -1],
                      [-1, 8, -1],
                      [-1, -1, -1]], dtype=np.float32)

# The edge map is |response| scaled so that this percentile of it maps to white (255).
EDGE_PERCENTILE = 99.5


from fastconv.commands import CLIError  # noqa: E402  (shared with the subcommand modules)


def _require(module: str, package: str, purpose: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CLIError(f"{purpose} needs {package}, which is not installed; install the "
                       f"examples extra: pip install \"fastconv[examples]\" (or: pip install "
                       f"{package})") from None


def load_grey(image: Optional[str]):
    """(float32 (H, W) array in [0, 1], description) of an image file (read with Pillow and
    converted to grey) or, for None, of scikit-image's 'camera' photo."""
    if image is None:
        data = _require("skimage.data", "scikit-image", "the default photo (skimage.data.camera)")
        img = np.asarray(data.camera())
        return img.astype(np.float32) / 255.0, "scikit-image's 'camera' photo"
    Image = _require("PIL.Image", "Pillow", "reading --image")
    try:
        with Image.open(image) as im:
            grey = im.convert("L")
            mode = im.mode
    except FileNotFoundError:
        raise CLIError(f"--image: no such file: {image}") from None
    except OSError as e:  # Pillow's UnidentifiedImageError is an OSError
        raise CLIError(f"--image: cannot read {image} as an image ({e})") from None
    return np.asarray(grey, dtype=np.float32) / 255.0, f"{image} ({mode}, converted to grey)"


def laplacian_edges(grey: np.ndarray) -> np.ndarray:
    """The Laplacian response of a (H, W) image, same size (zero padding, 'same')."""
    import fastconv.nn.functional as F
    y = F.conv2d(grey[None, None], LAPLACIAN[None, None], padding="same")
    return y[0, 0]


def to_uint8(response: np.ndarray) -> np.ndarray:
    """|response| scaled so its EDGE_PERCENTILE-th percentile is 255, clipped, as uint8."""
    mag = np.abs(response)
    top = float(np.percentile(mag, EDGE_PERCENTILE))
    scale = 255.0 / top if top > 0 else 0.0
    return np.clip(np.rint(mag * scale), 0, 255).astype(np.uint8)


def cmd_info(args) -> int:
    import fastconv
    from fastconv import _C
    print(f"fastconv {fastconv.__version__}")
    print(f"CPU kernels: instruction set {_C.isa()} (best on this CPU: {_C.best_isa()}), "
          f"{fastconv.num_threads()} threads")
    cpu = fastconv.backends.cpu
    print(f"CPU thread pool: {cpu.thread_pool} (now: {cpu.thread_pool_in_use})")
    print(f"CUDA: {'available' if fastconv.cuda_available() else 'not available'}")
    return 0


def cmd_edges(args) -> int:
    import fastconv
    from fastconv import _C
    Image = _require("PIL.Image", "Pillow", "writing the PNG")
    grey, what = load_grey(args.image)
    H, W = grey.shape
    t0 = time.perf_counter()
    response = laplacian_edges(grey)
    ms = (time.perf_counter() - t0) * 1e3
    edges = to_uint8(response)
    try:
        Image.fromarray(edges, mode="L").save(args.out, format="PNG")
    except OSError as e:
        raise CLIError(f"--out: cannot write {args.out} ({e})") from None
    print(f"read {what}: {W}x{H} pixels")
    print(f"conv2d with the 3x3 Laplacian [[-1,-1,-1],[-1,8,-1],[-1,-1,-1]], padding 'same': "
          f"{ms:.2f} ms on the CPU ({_C.isa()}, {fastconv.num_threads()} threads)")
    print(f"response range [{response.min():.3f}, {response.max():.3f}]; edge map = |response| "
          f"scaled so its {EDGE_PERCENTILE:g}th percentile is white; "
          f"{100.0 * np.mean(edges >= 64):.1f}% of pixels >= 64")
    print(f"wrote {args.out} ({W}x{H}, 8-bit grey PNG)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastconv", description="fastconv: fast 2-D convolution and "
                                "pooling kernels. Subcommands: finetune, predict, summary, info, "
                                "edges, bench.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in (
            ("finetune", "fine-tune a pretrained CNN (default: EfficientNet-Lite0 on "
                         "scikit-image's lfw_subset; needs the pretrained extra)"),
            ("predict", "top-5 ImageNet classes of a photo with a pretrained model"),
            ("summary", "Keras-style layer table of a zoo model")):
        module = importlib.import_module(f"fastconv.commands.{name}")
        s = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(s)
        s.set_defaults(func=module.run)
    s = sub.add_parser("info", help="version, CPU instruction set, threads, CUDA availability",
                       description="Print fastconv's version, the instruction set its CPU "
                       "kernels use (and the best this CPU supports), their thread count, and "
                       "whether the CUDA kernels and a GPU are available.")
    s.set_defaults(func=cmd_info)
    s = sub.add_parser("edges", help="Laplacian edge map of a photo, computed with fastconv's "
                       "conv2d (needs the examples extra)",
                       description="Filter a photo with the 3x3 Laplacian through fastconv's "
                       "conv2d ('same' padding) and write |response| as an 8-bit grey PNG, "
                       f"scaled so its {EDGE_PERCENTILE:g}th percentile is white. Needs the "
                       "examples extra: pip install \"fastconv[examples]\".")
    s.add_argument("--image", metavar="PATH", help="image file to read with Pillow (default: "
                   "scikit-image's 'camera' photo)")
    s.add_argument("--out", default="camera_edges.png", metavar="PNG",
                   help="where to write the edge map (default: camera_edges.png)")
    s.set_defaults(func=cmd_edges)
    from fastconv.commands import bench as bench_command
    s = sub.add_parser("bench", help="check, then time fastconv's kernels against PyTorch on the "
                       "layer suite (CPU or CUDA); tables, CSV/JSON, plot",
                       description=bench_command.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_command.add_arguments(s)
    s.set_defaults(func=bench_command.run)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        print(f"fastconv: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
