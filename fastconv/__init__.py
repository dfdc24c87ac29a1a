"""fastconv: fast 2-D convolution and pooling kernels (C++ and CUDA) with a small
Keras/PyTorch-style deep-learning layer on top.

    import fastconv as fc
    import fastconv.nn.functional as F
"""
from fastconv._backend import cuda_available, num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = ["cuda_available", "num_threads", "set_num_threads", "__version__"]
