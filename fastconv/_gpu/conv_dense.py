"""Dense and grouped conv2d on the CUDA path (fastconv._cuda / fastconv._cuda_emu): implicit-GEMM
kernels of csrc/cuda/conv2d_cuda.cu, forward (bias fused) and the input and weight gradients.
Same signatures as fastconv/_gpu/conv.py (whose depthwise twins route the other shapes here).
Arguments arrive checked and resolved by fastconv.nn._array / fastconv.nn.grad: 4-D arrays of the
backend's library, stride and dilation (h, w) int pairs, pad (top, bottom, left, right), groups an
int, out_hw = (P, Q). Inputs in any layout are made C-contiguous (NCHW); outputs are new
C-contiguous arrays of the input's library, written on the library's current stream. An empty
batch launches nothing (empty outputs; zeros for the weight gradient).

`tile` (None: chosen by fastconv.backends.cuda's switches, see below; -1: the kernels' heuristic
with float32 on exact SIMT tiles; -2: the heuristic with TF32 tensor cores allowed for float32;
0, 1, 2: 128x128, 64x64, 32x32 SIMT block tiles; 3, 4: 64x64, 128x128 on tensor cores through
WMMA, float16 / bfloat16 natively and their default, float32 through TF32) and, for the weight
gradient, `splits` (0: heuristic; else the split-K factor) force a configuration, for tests and
benchmarks. With `tile=None` the heuristic gets -2 when fastconv.backends.cuda.allow_tf32 is on
(the default) and -1 when off, or with fastconv.backends.cuda.benchmark on, the configuration is
chosen by timing each once per problem (fastconv/_gpu/autotune.py).
"""
from __future__ import annotations

from fastconv import _shape
from fastconv._gpu import autotune


def _geometry(stride, pad, dilation):
    return (tuple(int(v) for v in stride), tuple(int(v) for v in pad),
            tuple(int(v) for v in dilation))


def _out_hw(hw, kernel, stride, pad, dilation):
    return (_shape.output_size(hw[0], kernel[0], stride[0], pad[0], pad[1], dilation[0], False),
            _shape.output_size(hw[1], kernel[1], stride[1], pad[2], pad[3], dilation[1], False))


def conv2d(be, x, w, b, stride, pad, dilation, groups, out_hw, *, tile=None):
    op = "conv2d"
    N, C, H, W = (int(v) for v in x.shape)
    K, _, R, S = (int(v) for v in w.shape)
    stride, pad, dilation = _geometry(stride, pad, dilation)
    P, Q = (int(v) for v in out_hw)
    expect = _out_hw((H, W), (R, S), stride, pad, dilation)
    if (P, Q) != expect:
        raise ValueError(f"{op}: out_hw {(P, Q)} does not match the geometry {expect}")
    code = be.dtype_code(op, "input", x)
    y = be.empty((N, K, P, Q), x.dtype)
    if N == 0:
        return y
    x, w = be.contiguous(x), be.contiguous(w)
    b = None if b is None else be.contiguous(b)
    wshape = (K, int(w.shape[1]), R, S)

    def launch(t):
        be.mod.conv2d_forward(code, be.ptr(x), be.ptr(w), be.ptr(b), be.ptr(y), (N, C, H, W),
                              wshape, stride, pad, dilation, int(groups), int(t), be.stream())
    if tile is None:
        tile = autotune.choose(be, (op, code, (N, C, H, W), wshape, stride, pad, dilation,
                                    int(groups), b is not None), code, launch)
    launch(tile)
    return y


def conv2d_backward_input(be, dy, w, input_shape, stride, pad, dilation, groups, *, tile=None):
    op = "conv2d_backward_input"
    xshape = tuple(int(v) for v in input_shape)
    stride, pad, dilation = _geometry(stride, pad, dilation)
    code = be.dtype_code(op, "grad_output", dy)
    dx = be.empty(xshape, dy.dtype)
    if xshape[0] == 0:
        return dx
    dy, w = be.contiguous(dy), be.contiguous(w)
    wshape = tuple(int(v) for v in w.shape)

    def launch(t):
        be.mod.conv2d_backward_input(code, be.ptr(dy), be.ptr(w), be.ptr(dx), xshape, wshape,
                                     stride, pad, dilation, int(groups), int(t), be.stream())
    if tile is None:
        tile = autotune.choose(be, (op, code, xshape, wshape, stride, pad, dilation,
                                    int(groups)), code, launch)
    launch(tile)
    return dx


def conv2d_backward_weight(be, dy, x, weight_shape, stride, pad, dilation, groups, *, tile=None,
                           splits=0):
    op = "conv2d_backward_weight"
    wshape = tuple(int(v) for v in weight_shape)
    stride, pad, dilation = _geometry(stride, pad, dilation)
    code = be.dtype_code(op, "input", x)
    xshape = tuple(int(v) for v in x.shape)
    if xshape[0] == 0:
        return be.zeros(wshape, x.dtype)
    dy, x = be.contiguous(dy), be.contiguous(x)
    dw = be.empty(wshape, x.dtype)

    def launch(t):
        nbytes = int(be.mod.conv2d_backward_weight_workspace_bytes(
            code, xshape, wshape, stride, pad, dilation, int(groups), int(t), int(splits)))
        ws = be.workspace(nbytes) if nbytes else None
        be.mod.conv2d_backward_weight(code, be.ptr(dy), be.ptr(x), be.ptr(dw), be.ptr(ws), nbytes,
                                      xshape, wshape, stride, pad, dilation, int(groups), int(t),
                                      int(splits), be.stream())
    if tile is None:
        tile = autotune.choose(be, (op, code, xshape, wshape, stride, pad, dilation, int(groups),
                                    int(splits)), code, launch)
    launch(tile)
    return dw
