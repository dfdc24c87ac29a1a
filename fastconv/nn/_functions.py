"""The autograd Functions behind fastconv.nn.functional: each forward works on plain arrays and
saves only what its backward needs. Convolution and pooling call the fastconv kernels
(fastconv.nn._array for the forward pass, fastconv.nn.grad for the gradients); the rest is
vectorised array code that runs on numpy or cupy alike.
"""
from __future__ import annotations

import numpy as np

from fastconv import _C, _gpu
from fastconv.autograd import Function, array_module
from fastconv.nn import _array as A
from fastconv.nn import grad as G


def _xp(a):
    return array_module(a)


def _kernel_ok(a) -> bool:
    """Whether the fused channel_affine kernel takes a as it is: numpy float32/float64 C-contiguous
    on the CPU kernels; on the CUDA path (CuPy arrays, or numpy inside
    fastconv.testing.cuda_emulation()) C-contiguous float16/float32/float64."""
    if isinstance(a, np.ndarray) and not _gpu.emulating():
        return (a.dtype in (np.float32, np.float64) and a.flags.c_contiguous
                and a.dtype.isnative)
    if not (isinstance(a, np.ndarray) or type(a).__module__.split(".")[0] == "cupy"):
        return False
    return a.dtype in (np.float16, np.float32, np.float64) and a.flags.c_contiguous


def _bn_kernel_ok(a) -> bool:
    """Whether the CPU batch-norm kernels (csrc/cpu/batch_norm_cpu.h) take a as it is: a native
    C-contiguous float32/float64 numpy array, outside fastconv.testing.cuda_emulation()."""
    return (isinstance(a, np.ndarray) and not _gpu.emulating()
            and a.dtype in (np.float32, np.float64) and a.flags.c_contiguous and a.dtype.isnative)


def _host_gemm(a) -> bool:
    """Whether Linear runs on fastconv's CPU GEMM (numpy on the CPU kernels) rather than the array
    library's matmul (CuPy, and the emulated GPU, whose dense-conv kernels come later)."""
    return _xp(a) is np and not _gpu.emulating()


def clamp_activation(x, activation: str):
    """relu / relu6 of x in one multi-threaded pass on numpy (A.channel_affine with scale 1 and
    shift 0 over a (1, 1, size) view), two numpy passes otherwise. NaN stays NaN."""
    xp = _xp(x)
    if _kernel_ok(x) and x.size:  # scale and shift on x's device (CuPy for a CuPy x)
        one, zero = xp.ones(1, x.dtype), xp.zeros(1, x.dtype)
        return A.channel_affine(x.reshape(1, 1, -1), one, zero, activation).reshape(x.shape)
    out = xp.maximum(x, x.dtype.type(0))
    if activation == "relu6":
        xp.minimum(out, x.dtype.type(6), out=out)
    return out


def clamp_gradient(g, out, activation: str):
    """The gradient through out = clamp_activation(x, activation), from out: g where out is
    strictly inside the bounds (0 < out for relu, 0 < out < 6 for relu6; exactly where x is),
    else 0. One multi-threaded pass on numpy (_C.clamp_backward), an array expression otherwise."""
    lo, hi = A._AFFINE_BOUNDS[activation]
    if _bn_kernel_ok(out) and out.size and isinstance(g, np.ndarray) and g.dtype == out.dtype:
        g = g if _bn_kernel_ok(g) else np.ascontiguousarray(g)
        dx = np.empty_like(out)
        _C.clamp_backward(g.reshape(out.shape), out, dx, lo, hi)
        return dx
    inside = out > lo
    if hi is not None:
        inside &= out < hi
    return g * inside


# ---------------------------------------------------------------------- convolution and pooling
class Conv2d(Function):
    def forward(self, x, w, b=None, *, stride, padding, dilation, groups):
        self.x, self.w = x, w
        self.geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        return A.conv2d(x, w, b, **self.geometry)

    def backward(self, g):
        need = self.needs_grad
        dx = G.conv2d_input(self.x.shape, self.w, g, **self.geometry) if need[0] else None
        dw = G.conv2d_weight(self.x, self.w.shape, g, **self.geometry) if need[1] else None
        if len(need) == 3:
            return dx, dw, (G.conv2d_bias(g) if need[2] else None)
        return dx, dw


class MaxPool2d(Function):
    """Saves the argmax indices, not the input; computes them only when they are needed (for
    backward, or asked for through `sink`, a dict that receives them)."""
    def forward(self, x, *, sink=None, **options):
        self.shape, self.options = x.shape, options
        if not self.tracking and sink is None:
            return A.max_pool2d(x, **options)
        out, self.indices = A.max_pool2d(x, return_indices=True, **options)
        if sink is not None:
            sink["indices"] = self.indices
        return out

    def backward(self, g):
        o = self.options  # the geometry makes the GPU backward a parallel gather
        return G.max_pool2d_input(self.shape, g, self.indices, kernel_size=o["kernel_size"],
                                  stride=o.get("stride"), padding=o.get("padding", 0),
                                  dilation=o.get("dilation", 1))


class AvgPool2d(Function):
    def forward(self, x, **options):
        self.shape, self.options = x.shape, options
        return A.avg_pool2d(x, **options)

    def backward(self, g):
        return G.avg_pool2d_input(self.shape, g, **self.options)


class AdaptiveAvgPool2d(Function):
    def forward(self, x, *, output_size):
        self.shape = x.shape
        return A.adaptive_avg_pool2d(x, output_size)

    def backward(self, g):
        return G.adaptive_avg_pool2d_input(self.shape, g)


def _col(a):
    """(M, K) as the (1, K, M, 1) image whose 1x1 convolution is a GEMM over M."""
    return np.ascontiguousarray(a.T)[None, :, :, None]


def _row(img):
    """A (1, K, M, 1) image back to (M, K)."""
    return np.ascontiguousarray(img[0, :, :, 0].T)


class Linear(Function):
    """y = x @ w.T + b for x (..., in), w (out, in), b (out,).

    On numpy the three products run on fastconv's own GEMM (a 1x1 convolution over the batch)
    rather than numpy's BLAS: two thread pools spinning in turn on the same cores cost 10x."""
    def forward(self, x, w, b=None):
        self.shape, self.w = x.shape, w
        self.x = x.reshape(-1, x.shape[-1])
        if _host_gemm(x):
            self.x = _col(self.x)  # (1, in, M, 1), kept for the weight gradient
            y = _row(A.conv2d(self.x, w[:, :, None, None]))
        else:
            y = self.x @ w.T
        if b is not None:
            y += b
        return y.reshape(x.shape[:-1] + (w.shape[0],))

    def backward(self, g):
        need = self.needs_grad
        g = g.reshape(-1, g.shape[-1])
        dx = dw = None
        if _host_gemm(g):
            gc = _col(g)
            if need[0]:
                dx = _row(G.conv2d_input((1, self.w.shape[1], g.shape[0], 1),
                                         self.w[:, :, None, None], gc))
            if need[1]:
                dw = G.conv2d_weight(self.x, self.w.shape + (1, 1), gc)[:, :, 0, 0]
        else:
            dx = g @ self.w if need[0] else None
            dw = g.T @ self.x if need[1] else None
        if dx is not None:
            dx = dx.reshape(self.shape)
        if len(need) == 3:
            return dx, dw, (g.sum(0) if need[2] else None)
        return dx, dw


# ------------------------------------------------------------------------------- activations
class ReLU6(Function):
    def forward(self, x):
        out = clamp_activation(x, "relu6")
        if self.tracking:
            self.out = out
        return out

    def backward(self, g): return clamp_gradient(g, self.out, "relu6")


class LeakyReLU(Function):
    def forward(self, x, *, slope):
        self.scale = _xp(x).where(x > 0, x.dtype.type(1), x.dtype.type(slope))
        return x * self.scale

    def backward(self, g): return g * self.scale


class SiLU(Function):
    def forward(self, x):
        xp = _xp(x)
        self.x, self.s = x, 0.5 * (xp.tanh(0.5 * x) + 1)
        return x * self.s

    def backward(self, g):
        return g * self.s * (1 + self.x * (1 - self.s))


class Softmax(Function):
    def forward(self, x, *, axis):
        xp = _xp(x)
        e = xp.exp(x - x.max(axis=axis, keepdims=True))
        self.out, self.axis = e / e.sum(axis=axis, keepdims=True), axis
        return self.out

    def backward(self, g):
        return self.out * (g - (g * self.out).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    def forward(self, x, *, axis):
        xp = _xp(x)
        shifted = x - x.max(axis=axis, keepdims=True)
        self.out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        self.axis = axis
        return self.out

    def backward(self, g):
        return g - _xp(g).exp(self.out) * g.sum(axis=self.axis, keepdims=True)


class Dropout(Function):
    def forward(self, x, *, p, rng):
        keep = rng.random(x.shape) >= p  # drawn on the host; moved next to x on the GPU
        xp = _xp(x)
        self.scale = xp.asarray(keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p)))
        return x * self.scale

    def backward(self, g): return g * self.scale


# ----------------------------------------------------------------------------- normalisation
def _channel_sum(a3):
    """Per-channel sums of (N, C, L) in float64: numpy's pairwise float32 sum along each
    contiguous row (error ~ eps * log L), then the N row sums accumulated in float64. As accurate
    as a float64 accumulation here (2e-8 relative on 16x64x3136) and 3x faster."""
    return a3.sum(axis=2).sum(axis=0, dtype=array_module(a3).float64)


class BatchNorm(Function):
    """Batch normalisation over axis 1 of (N, C) or (N, C, *). In training mode the batch
    statistics are used and the running ones updated in place (unbiased variance, PyTorch's
    momentum convention); otherwise the running statistics are used.

    Per-channel sums accumulate in float64 (as PyTorch's CPU kernel does): the input gradient
    of a normalised layer is a difference of nearly equal terms, and float32 sums over a large
    batch lose digits there. The input is viewed as (N, C, L) so that every step is one
    vectorised pass with per-channel coefficients."""
    def forward(self, x, weight=None, bias=None, *, running_mean, running_var, training,
                momentum, eps):
        xp = _xp(x)
        x3 = x.reshape(x.shape[0], x.shape[1], -1)
        dt = x.dtype
        self.kernel = False
        if training:
            count = x3.shape[0] * x3.shape[2]
            if count <= 1:
                raise ValueError(f"batch_norm: training needs more than one value per channel, "
                                 f"got input shape {tuple(x.shape)}")
            if _bn_kernel_ok(x3) and x3.shape[1]:
                return self._forward_kernel(x, x3, weight, bias, running_mean, running_var,
                                            momentum, eps)
            mean = _channel_sum(x3) / count
            xc = x3 - mean.astype(dt)[:, None]
            var = _channel_sum(xp.square(xc)) / count
            self._update_running(running_mean, running_var, mean, var, count, momentum)
        else:
            mean, var = running_mean.astype(xp.float64), running_var.astype(xp.float64)
            return self._affine(x, x3, mean, var, weight, bias, eps)
        self.training, self.count = training, x3.shape[0] * x3.shape[2]
        self.invstd = (1.0 / xp.sqrt(var + eps)).astype(dt)
        xc *= self.invstd[:, None]
        self.xhat, self.weight, self.shape = xc, weight, x.shape
        C = x3.shape[1]
        if _kernel_ok(xc):
            y = A.channel_affine(xc, xp.ones(C, dt) if weight is None else weight,
                                 xp.zeros(C, dt) if bias is None else bias)
        else:
            y = xc * weight[:, None] if weight is not None else xc.copy()
            if bias is not None:
                y += bias[:, None]
        return y.reshape(x.shape)

    @staticmethod
    def _update_running(running_mean, running_var, mean, var, count, momentum):
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += (momentum * mean).astype(running_mean.dtype)
        if running_var is not None:
            running_var *= 1 - momentum
            running_var += (momentum * var * (count / (count - 1))).astype(running_var.dtype)

    def _forward_kernel(self, x, x3, weight, bias, running_mean, running_var, momentum, eps):
        """Training forward on the CPU kernels: the statistics in one multi-threaded pass (float64
        per row, rows merged in order), y = (x - mean) * scale + shift in another. Saves x
        itself (not the normalised copy) for backward."""
        dt, C = x.dtype, x3.shape[1]
        count = x3.shape[0] * x3.shape[2]
        mean, var = np.empty(C), np.empty(C)
        _C.batch_norm_stats(x3, mean, var)
        self._update_running(running_mean, running_var, mean, var, count, momentum)
        invstd = 1.0 / np.sqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        shift = np.zeros(C, dt) if bias is None else np.ascontiguousarray(bias, dt)
        y = np.empty_like(x3)
        _C.batch_norm_forward(x3, mean.astype(dt), scale.astype(dt), shift, y)
        self.kernel, self.training, self.count = True, True, count
        self.x3, self.mean, self.invstd64 = x3, mean, invstd
        self.invstd = invstd.astype(dt)
        self.xhat, self.weight, self.shape = None, weight, x.shape
        return y.reshape(x.shape)

    def _backward_kernel(self, g):
        """Training backward on the CPU kernels: per-channel sums of g and g * (x - mean) in one
        pass (float64), then dx = scale * (g - mean(g) - xhat * mean(g * xhat)) in another."""
        need, x3, dt = self.needs_grad, self.x3, self.x3.dtype
        g3 = g.reshape(x3.shape)
        if not _bn_kernel_ok(g3) or g3.dtype != dt:
            g3 = np.ascontiguousarray(g3, dtype=dt)
        C = x3.shape[1]
        sum_g, sum_gxc = np.empty(C), np.empty(C)
        _C.batch_norm_backward_reduce(g3, x3, self.mean, sum_g, sum_gxc)
        invstd = self.invstd64
        sum_gx = sum_gxc * invstd  # sum of g * xhat
        dx = None
        if need[0]:
            scale = invstd if self.weight is None else invstd * self.weight
            b = -scale * invstd * sum_gx / self.count
            e = -scale * sum_g / self.count
            dx = np.empty_like(x3)
            _C.batch_norm_backward_input(g3, x3, self.mean.astype(dt), scale.astype(dt),
                                         b.astype(dt), e.astype(dt), dx)
            dx = dx.reshape(self.shape)
        grads = [dx]
        if len(need) > 1:
            grads.append(sum_gx.astype(dt) if need[1] else None)
        if len(need) > 2:
            grads.append(sum_g.astype(dt) if need[2] else None)
        return tuple(grads)

    def _affine(self, x, x3, mean, var, weight, bias, eps):
        """Inference: y = x * scale + shift per channel, two passes; backward recomputes the
        normalised input only when the affine parameters need gradients."""
        xp, dt = _xp(x), x.dtype
        invstd = 1.0 / xp.sqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        self.training, self.weight, self.shape = False, weight, x.shape
        self.invstd = invstd.astype(dt)
        if self.tracking and len(self.needs_grad) > 1 and any(self.needs_grad[1:]):
            self.xhat = (x3 - mean.astype(dt)[:, None]) * self.invstd[:, None]
        else:
            self.xhat = None
        if _kernel_ok(x3):
            return A.channel_affine(x3, scale.astype(dt), shift.astype(dt)).reshape(x.shape)
        y = x3 * scale.astype(dt)[:, None]
        y += shift.astype(dt)[:, None]
        return y.reshape(x.shape)

    def backward(self, g):
        need = self.needs_grad
        if self.kernel:
            return self._backward_kernel(g)
        if self.xhat is None:  # inference with frozen affine parameters: only dx
            scale = self.invstd if self.weight is None else self.invstd * self.weight
            g3 = g.reshape(g.shape[0], g.shape[1], -1)
            dx = A.channel_affine(g3, scale, np.zeros_like(scale)) if _kernel_ok(g3) \
                else g3 * scale[:, None]
            return (dx.reshape(self.shape),) + (None,) * (len(need) - 1)
        g3 = g.reshape(self.xhat.shape)
        sum_g = _channel_sum(g3)
        sum_gx = _channel_sum(g3 * self.xhat)
        scale = self.invstd if self.weight is None else self.invstd * self.weight
        dx = None
        if need[0]:
            if self.training:  # the batch statistics depend on x too:
                # dx = scale * (g - mean(g) - xhat * mean(g * xhat)), per channel
                dt = g.dtype
                shift = (-scale * sum_g / self.count).astype(dt)
                coef = (-scale * sum_gx / self.count).astype(dt)[:, None]
                if _kernel_ok(g3):
                    dx = A.channel_affine(g3, scale, shift)
                else:
                    dx = g3 * scale[:, None]
                    dx += shift[:, None]
                dx += self.xhat * coef
            else:
                dx = g3 * scale[:, None]
            dx = dx.reshape(self.shape)
        grads = [dx]
        if len(need) > 1:
            grads.append(sum_gx.astype(g.dtype) if need[1] else None)
        if len(need) > 2:
            grads.append(sum_g.astype(g.dtype) if need[2] else None)
        return tuple(grads)


def _channel_window_sum(a, before: int, after: int):
    """s[:, c] = sum of a[:, c - before .. c + after] (zero outside), along axis 1."""
    xp = _xp(a)
    C = a.shape[1]
    pad = [(0, 0)] * a.ndim
    pad[1] = (before + 1, after)
    cs = xp.cumsum(xp.pad(a, pad), axis=1)
    idx = np.arange(C)
    return xp.take(cs, idx + before + after + 1, axis=1) - xp.take(cs, idx, axis=1)


class LocalResponseNorm(Function):
    """y = x / (k + alpha/n * sum over the n neighbouring channels of x^2) ** beta (the window is
    centred: n//2 channels before, (n-1)//2 after), as in AlexNet and torch."""
    def forward(self, x, *, size, alpha, beta, k):
        self.before, self.after = size // 2, (size - 1) // 2
        self.x, self.c, self.beta = x, alpha / size, beta
        self.div = k + self.c * _channel_window_sum(x * x, self.before, self.after)
        self.scale = self.div ** -beta
        return x * self.scale

    def backward(self, g):
        t = g * self.x * self.scale / self.div
        # the adjoint of a window [c-before, c+after] is the window [c-after, c+before]
        return g * self.scale - 2 * self.c * self.beta * self.x * _channel_window_sum(
            t, self.after, self.before)


# ------------------------------------------------------------------------------------ losses
def _reduce(loss, reduction: str, denom=None):
    if reduction == "none":
        return loss
    total = loss.sum()
    return total if reduction == "sum" else total / (loss.size if denom is None else denom)


def _reduce_backward(g, shape, reduction: str, denom, dtype, xp):
    if reduction == "none":
        return g
    scale = g if reduction == "sum" else g / denom
    return xp.broadcast_to(scale.astype(dtype), shape)


class CrossEntropy(Function):
    """Softmax cross-entropy of logits (N, C) against class indices (N,) or class probabilities
    (N, C); label smoothing, class weights and ignore_index as in torch.nn.functional."""
    def forward(self, logits, *, target, weight, ignore_index, reduction, label_smoothing):
        xp = _xp(logits)
        N, C = logits.shape
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        w = xp.ones(C, dtype=logits.dtype) if weight is None else weight.astype(logits.dtype)
        if target.dtype.kind in "iu":  # class indices
            valid = target != ignore_index
            safe = xp.where(valid, target, 0)
            # torch: (1 - eps) * w[y] * -logp[y] + eps / C * sum_c w[c] * -logp[c], and the mean
            # divides by the summed w[y] of the non-ignored samples
            coef = xp.zeros_like(logp)
            coef[xp.arange(N), safe] = (1 - label_smoothing) * w[safe]
            if label_smoothing:
                coef += (label_smoothing / C) * w[None, :]
            coef *= valid[:, None]
            sample_w = w[safe] * valid
            denom = sample_w.sum()
        else:  # class probabilities
            target = target.astype(logits.dtype, copy=False)
            if label_smoothing:
                target = target * (1 - label_smoothing) + label_smoothing / C
            coef = target * w[None, :]
            denom = N
        loss = -(coef * logp).sum(axis=1)
        self.p, self.coef = xp.exp(logp), coef
        self.reduction, self.denom = reduction, denom
        return _reduce(loss, reduction, denom)

    def backward(self, g):
        xp = _xp(self.p)
        g = _reduce_backward(g, (self.p.shape[0],), self.reduction, self.denom, self.p.dtype, xp)
        return g[:, None] * (self.coef.sum(axis=1, keepdims=True) * self.p - self.coef)


class NLLLoss(Function):
    """Negative log-likelihood of log-probabilities (N, C) against class indices (N,)."""
    def forward(self, logp, *, target, weight, ignore_index, reduction):
        xp = _xp(logp)
        N, C = logp.shape
        valid = target != ignore_index
        safe = xp.where(valid, target, 0)
        w = xp.ones(C, dtype=logp.dtype) if weight is None else weight.astype(logp.dtype)
        self.sample_w = w[safe] * valid
        self.safe, self.shape = safe, logp.shape
        self.reduction, self.denom = reduction, self.sample_w.sum()
        return _reduce(-logp[xp.arange(N), safe] * self.sample_w, reduction, self.denom)

    def backward(self, g):
        xp = _xp(self.sample_w)
        g = _reduce_backward(g, self.sample_w.shape, self.reduction, self.denom,
                             self.sample_w.dtype, xp)
        out = xp.zeros(self.shape, dtype=self.sample_w.dtype)
        out[xp.arange(self.shape[0]), self.safe] = -g * self.sample_w
        return out


class BCEWithLogits(Function):
    """Binary cross-entropy on logits, computed stably: max(x,0) - x*y*... with pos_weight."""
    def forward(self, x, *, target, weight, pos_weight, reduction):
        xp = _xp(x)
        y = target.astype(x.dtype)
        log_sig = -(xp.logaddexp(0, -x))       # log sigmoid(x)
        log_one_minus = -(xp.logaddexp(0, x))  # log (1 - sigmoid(x))
        pw = 1 if pos_weight is None else pos_weight.astype(x.dtype)
        loss = -(pw * y * log_sig + (1 - y) * log_one_minus)
        w = 1 if weight is None else weight.astype(x.dtype)
        loss = loss * w
        sig = xp.exp(log_sig)
        # d/dx: -(pw*y*(1-s) - (1-y)*s) * w
        self.dx = -(pw * y * (1 - sig) - (1 - y) * sig) * w
        self.reduction = reduction
        return _reduce(xp.broadcast_to(loss, x.shape) if loss.shape != x.shape else loss,
                       reduction)

    def backward(self, g):
        xp = _xp(self.dx)
        g = _reduce_backward(g, self.dx.shape, self.reduction, self.dx.size, self.dx.dtype, xp)
        return g * self.dx


class BCE(Function):
    """Binary cross-entropy on probabilities; the logs are clamped at -100 as in torch."""
    def forward(self, p, *, target, weight, reduction):
        xp = _xp(p)
        y = target.astype(p.dtype)
        if ((p < 0) | (p > 1)).any():
            raise ValueError("binary_cross_entropy: input must hold probabilities in [0, 1]; "
                             "use binary_cross_entropy_with_logits for raw scores")
        logp = xp.maximum(xp.log(p), -100)
        log1mp = xp.maximum(xp.log1p(-p), -100)
        w = 1 if weight is None else weight.astype(p.dtype)
        loss = -(y * logp + (1 - y) * log1mp) * w
        eps = p.dtype.type(1e-12)
        self.dx = w * (p - y) / xp.maximum((1 - p) * p, eps)
        self.reduction = reduction
        return _reduce(loss, reduction)

    def backward(self, g):
        xp = _xp(self.dx)
        g = _reduce_backward(g, self.dx.shape, self.reduction, self.dx.size, self.dx.dtype, xp)
        return g * self.dx


class MSE(Function):
    def forward(self, x, y, *, reduction):
        self.diff, self.reduction = x - y, reduction
        return _reduce(self.diff * self.diff, reduction)

    def backward(self, g):
        xp = _xp(self.diff)
        g = _reduce_backward(g, self.diff.shape, self.reduction, self.diff.size, self.diff.dtype, xp)
        d = 2 * g * self.diff
        return d, -d
