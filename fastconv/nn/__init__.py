"""Neural-network building blocks: `functional` (conv2d, max_pool2d, avg_pool2d,
adaptive_avg_pool2d with torch.nn.functional's signatures, numpy in / numpy out) and `grad`
(their gradients, shaped like torch.nn.grad)."""
from fastconv.nn import functional, grad

__all__ = ["functional", "grad"]
