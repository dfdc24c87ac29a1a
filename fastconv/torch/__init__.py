"""fastconv's kernels inside PyTorch (imported on request: `import fastconv` never imports torch).

    import fastconv.torch as fct

    y = fct.conv2d(x, w, b, stride=2, padding=1)       # torch.nn.functional's signatures,
    y = fct.max_pool2d(x, 3, 2, 1)                      # differentiable, zero-copy on the CPU
    conv = fct.Conv2d(3, 64, 7, stride=2, padding=3)    # drop-in torch.nn layers
    fct.convert(model)                                  # swap a model's conv / pooling layers
    fct.revert(model)                                   # and back

- functional.py: conv2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d on torch tensors.
- modules.py: Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d (subclasses of the torch layers).
- conversion.py: convert / revert.
- _kernels.py: the implementations on torch tensors, with the autograd formulas.
- _ops.py: the fastconv:: custom ops (torch.library.custom_op with fake implementations and
  autograd formulas), which torch.compile(fullgraph=True) and torch.export see as single ops.
- _eager.py: the same kernels and formulas without the dispatcher (a torch.autograd.Function)
  when nothing can watch the call; any tracer, mode, transform or profiler gets the custom ops.
- _launch.py: which tensors the kernels take, and the one launch function (CPU: numpy views of
  the tensors into fastconv._C); CUDA tensors go to the CUDA twins of fastconv/_gpu/.

float32 and float64 on the CPU; float32, float16, bfloat16 and float64 on CUDA (fastconv._cuda,
torch's current stream and caching allocator; torch.autocast casts conv2d there). Without the CUDA
build or a GPU, CUDA tensors raise NotImplementedError in the functions (the modules run torch's
implementation instead, with a warning).
Double backward (create_graph=True through fastconv's backward) is not supported.
"""
try:
    import torch  # noqa: F401  (the top-level torch package)
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("fastconv.torch needs PyTorch: pip install \"fastconv[torch]\" "
                      "(torch==2.13.0)") from e

from fastconv.torch.conversion import convert, revert
from fastconv.torch.functional import adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d
from fastconv.torch.modules import AdaptiveAvgPool2d, AvgPool2d, Conv2d, MaxPool2d

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "Conv2d", "MaxPool2d",
           "AvgPool2d", "AdaptiveAvgPool2d", "convert", "revert"]
