"""The heavier `fastconv` subcommands (finetune, predict, summary), one module each; the parser
and the light commands live in fastconv.cli."""


class CLIError(Exception):
    """A user-facing error: printed as 'fastconv: error: ...', exit status 1. (Defined here, not
    in fastconv.cli, so that `python -m fastconv.cli` and the commands share one class.)"""
