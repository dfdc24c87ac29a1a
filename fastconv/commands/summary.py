"""`fastconv summary MODEL`: the Keras-style layer table of a zoo model."""
from __future__ import annotations

from fastconv.commands import CLIError


def add_arguments(s) -> None:
    s.add_argument("model", help="zoo model name (see fastconv.models.list_models())")
    s.add_argument("--num-classes", type=int, default=None)
    s.add_argument("--input-size", type=int, default=None,
                   help="square input resolution (default: the model's own)")
    s.add_argument("--freeze", action="store_true",
                   help="freeze all but the classifier, to see the trainable split")


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
    model.summary((c, h, w))
    return 0
