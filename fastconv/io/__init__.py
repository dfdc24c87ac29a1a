"""Weight files without torch: read torch checkpoints, safetensors, npz and Keras HDF5 into dicts
of numpy arrays, and write .pth (torch's zip format), .safetensors and .npz.

    import fastconv as fc
    state = fc.load("resnet18.pth")              # {'conv1.weight': ndarray, ...}
    fc.save(state, "resnet18.safetensors")

Formats (detected from the file's bytes, whatever its extension):

* torch ``.pth``/``.pt``, zip format (torch >= 1.6) and legacy format: the pickle inside is read by
  an allow-list opcode interpreter (``_unpickler``) that never imports or calls anything from
  the file; files that ask for more raise UnsafeFileError. TorchScript archives and the old tar
  format are refused. See torch_format for checkpoint unwrapping and ``key=``.
* ``.safetensors`` through the safetensors package (extra ``pretrained``); bfloat16 -> float32.
* ``.npz`` through ``np.load(allow_pickle=False)``.
* Keras ``.h5`` (legacy whole model or weights) and ``.weights.h5`` / ``.keras`` (Keras 3) through
  h5py (extra ``h5``), as Keras arrays keyed "<layer>/<weight>"; ``convert="torch"`` or
  keras_to_torch_layout converts them to torch layouts and names.

Every damaged file raises a FileFormatError subclass (a ValueError) naming the file.
"""
from fastconv.io._api import load, save
from fastconv.io.errors import CorruptFileError, FileFormatError, UnsafeFileError
from fastconv.io.keras_layout import (conv_kernel_to_torch, dense_kernel_to_torch,
                                      depthwise_kernel_to_torch, keras_to_torch_layout)

__all__ = ["load", "save", "FileFormatError", "CorruptFileError", "UnsafeFileError",
           "keras_to_torch_layout", "conv_kernel_to_torch", "depthwise_kernel_to_torch",
           "dense_kernel_to_torch"]
