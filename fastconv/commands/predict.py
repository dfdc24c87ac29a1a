"""`fastconv predict IMAGE`: the top-5 ImageNet classes of a photo with a pretrained model."""
from __future__ import annotations

import os

from fastconv.commands import CLIError
from fastconv.commands._args import int_at_least


def add_arguments(s) -> None:
    s.add_argument("image", nargs="?", default=None,
                   help="image file to classify (default: scikit-image's 'chelsea' cat photo)")
    s.add_argument("--model", default="efficientnet_lite0",
                   help="zoo model (fastconv.models.list_models()) (default: efficientnet_lite0)")
    s.add_argument("--weights", default=None, metavar="PATH",
                   help="checkpoint to load (default: the model's bundled pretrained weights)")
    s.add_argument("--top", type=int_at_least(1), default=5, metavar="K",
                   help="how many of the most probable classes to print, >= 1 (default: 5)")


def run(args) -> int:
    from fastconv import models
    if args.model not in models.list_models():
        raise CLIError(f"--model: unknown model {args.model!r}")
    image, what = args.image, args.image
    if image is None:
        try:
            from skimage import data
        except ImportError:
            raise CLIError("no IMAGE given and scikit-image (for the default photo) is not "
                           "installed: pip install \"fastconv[examples]\"") from None
        image, what = data.chelsea(), "scikit-image's 'chelsea' photo"
    elif not os.path.isfile(image):
        raise CLIError(f"IMAGE: no such file: {image}")
    try:
        model = models.create_model(args.model, pretrained=args.weights or True)
    except (ImportError, ValueError, FileNotFoundError, OSError) as e:
        raise CLIError(f"cannot load {args.model}: {e}") from None
    try:
        top = models.predict_image(model, image, topk=args.top)
    except (OSError, ValueError) as e:
        raise CLIError(f"IMAGE: {e}") from None
    print(f"{args.model} on {what}:")
    for rank, (index, name, prob) in enumerate(top, 1):
        print(f"{rank}. {name} (class {index}): {prob:.3f}")
    return 0
