"""Running a file parser in a forked child, so that a crash or a hang inside a C library (HDF5 on a
damaged or hostile .h5 file) becomes a CorruptFileError instead of taking the caller down.

The child runs the parser and writes its result (a dict of numeric arrays) as an uncompressed .npz
into a private temporary folder, or its FileFormatError as JSON; it ends with os._exit (no atexit
handlers, no flushing of the parent's buffers). The parent reads the .npz back with the checked
.npz reader (never unpickling: a child subverted by the file could send nothing but arrays) and
maps the JSON onto an error class from a fixed list. A child killed by a signal, or running past
`timeout` seconds (then killed), raises CorruptFileError. Where os.fork does not exist (Windows)
the parser runs in this process.
"""
from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import warnings
import zipfile

from fastconv.io.errors import CorruptFileError, FileFormatError, UnsafeFileError

_ERRORS = {cls.__name__: cls for cls in (FileFormatError, CorruptFileError, UnsafeFileError)}
_POLL_S = 0.002


def _child(parse, args, out: str, err: str) -> int:
    from fastconv.io.npz_format import save_npz
    try:
        save_npz(parse(*args), out)
        return 0
    except FileFormatError as e:
        kind, message = type(e).__name__, str(e)
    except BaseException as e:  # noqa: BLE001 - anything else is reported, never raised here
        kind, message = "CorruptFileError", f"{type(e).__name__}: {e}"
    with open(err, "w") as f:
        json.dump({"class": kind, "message": message}, f)
    return 3


def run_isolated(parse, args: tuple, source: str, timeout: float, what: str) -> dict:
    """parse(*args) (a dict name -> numeric array) computed in a forked child; `what` names the
    library in errors ("HDF5")."""
    if not hasattr(os, "fork"):
        return parse(*args)
    with tempfile.TemporaryDirectory(prefix="fastconv-") as tmp:
        out, err = os.path.join(tmp, "result.npz"), os.path.join(tmp, "error.json")
        with warnings.catch_warnings():  # 3.12+: fork of a threaded process; the child only
            warnings.simplefilter("ignore", DeprecationWarning)      # runs h5py and numpy
            pid = os.fork()
        if pid == 0:                                     # the child
            code = 4
            try:
                code = _child(parse, args, out, err)
            finally:
                os._exit(code)
        status = _wait(pid, timeout, source, what)
        if os.WIFSIGNALED(status):
            name = signal.Signals(os.WTERMSIG(status)).name
            raise CorruptFileError(f"{source}: {what} crashed ({name}) reading the file, which is "
                                   "damaged or hostile (the crash was contained in a child "
                                   "process)")
        if os.WEXITSTATUS(status) == 3:
            with open(err) as f:
                report = json.load(f)
            raise _ERRORS.get(report.get("class"), CorruptFileError)(str(report.get("message")))
        if os.WEXITSTATUS(status) != 0:
            raise CorruptFileError(f"{source}: reading the file with {what} failed (exit status "
                                   f"{os.WEXITSTATUS(status)})")
        from fastconv.io.npz_format import load_npz
        with zipfile.ZipFile(out) as zf:
            return load_npz(out, zf, source)


def _wait(pid: int, timeout: float, source: str, what: str) -> int:
    deadline = time.monotonic() + timeout
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if time.monotonic() > deadline:
                raise CorruptFileError(f"{source}: {what} did not finish reading the file in "
                                       f"{timeout:g} s; a damaged file can make it loop (raise "
                                       "fastconv.io.keras_h5.H5_TIMEOUT_S for a huge file)")
            time.sleep(_POLL_S)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise

