"""`fastconv summary MODEL`: the Keras-style layer table of a zoo model."""
from __future__ import annotations

from fastconv.commands import CLIError
from fastconv.commands._args import int_at_least


def add_arguments(s) -> None:
    s.add_argument("model", help="zoo model name (see fastconv.models.list_models())")
    s.add_argument("--num-classes", type=int_at_least(1), default=None, metavar="N",
                   help="classes of the classifier, >= 1 (default: the model's own, 1000 for "
                   "the ImageNet models)")
    s.add_argument("--input-size", type=int_at_least(1), default=None, metavar="N",
                   help="square input resolution, >= 1 (default: the model's own)")
    s.add_argument("--freeze", action="store_true",
                   help="freeze all but the classifier, to see the trainable split (default: "
                   "all trainable)")


def run(args) -> int:
    from fastconv import models
    if args.model not in models.list_models():
        raise CLIError(f"unknown model {args.model!r}; choose one of "
                       f"{', '.join(models.list_models())}")
    kw = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = models.create_model(args.model, **kw)
    c, h, w = model.pretrained_cfg.get("input_size", (3, 224, 224))
    if args.input_size:
        h = w = args.input_size
    if args.freeze:
        model.freeze()
        model.get_classifier().unfreeze()
    try:
        model.summary((c, h, w))
    except ValueError as e:       # e.g. an input too small for the model's kernels
        raise CLIError(f"--input-size {h}: {args.model} cannot run on a {c}x{h}x{w} input: "
                       f"{e}") from None
    return 0
