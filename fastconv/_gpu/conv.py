"""conv2d on the CUDA path (fastconv._cuda / fastconv._cuda_emu): the twins of fastconv._C's conv
entry points. Arguments arrive checked and resolved by fastconv.nn._array / fastconv.nn.grad: 4-D
arrays of the backend's library, stride and dilation (h, w) int pairs, pad (top, bottom, left,
right), groups an int, out_hw = (P, Q). Depthwise convolution (groups == C, K a multiple of C) runs
the kernels of csrc/cuda/depthwise_conv2d_cuda.cu; dense and grouped convolution go to the
implicit-GEMM kernels through fastconv/_gpu/conv_dense.py. The bias gradient serves any convolution
(csrc/cuda/conv2d_bias_cuda.cu). Inputs in any layout are made C-contiguous (NCHW); outputs are new
C-contiguous arrays of the input's library, written on the library's current stream.
"""
from __future__ import annotations

from fastconv import _shape
from fastconv._gpu import conv_dense


def _is_depthwise(C: int, K: int, groups: int) -> bool:
    return groups == C and C >= 1 and K % C == 0


def _geometry(stride, pad, dilation):
    return (tuple(int(v) for v in stride), tuple(int(v) for v in pad),
            tuple(int(v) for v in dilation))


def _out_hw(op, hw, kernel, stride, pad, dilation):
    return (_shape.output_size(hw[0], kernel[0], stride[0], pad[0], pad[1], dilation[0], False),
            _shape.output_size(hw[1], kernel[1], stride[1], pad[2], pad[3], dilation[1], False))


def conv2d(be, x, w, b, stride, pad, dilation, groups, out_hw):
    op = "conv2d"
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    if not _is_depthwise(C, K, groups):
        return conv_dense.conv2d(be, x, w, b, stride, pad, dilation, groups, out_hw)
    stride, pad, dilation = _geometry(stride, pad, dilation)
    P, Q = (int(v) for v in out_hw)
    if (P, Q) != _out_hw(op, (H, W), (R, S), stride, pad, dilation):
        raise ValueError(f"{op}: out_hw {(P, Q)} does not match the geometry "
                         f"{_out_hw(op, (H, W), (R, S), stride, pad, dilation)}")
    code = be.dtype_code(op, "input", x)
    x, w = be.contiguous(x), be.contiguous(w)
    b = None if b is None else be.contiguous(b)
    y = be.empty((N, K, P, Q), x.dtype)
    be.mod.depthwise_conv2d_forward(code, be.ptr(x), be.ptr(w), be.ptr(b), be.ptr(y),
                                    tuple(x.shape), tuple(w.shape), stride, pad, dilation,
                                    int(groups), be.stream())
    return y


def conv2d_backward_input(be, dy, w, input_shape, stride, pad, dilation, groups):
    op = "conv2d_backward_input"
    N, C, H, W = (int(v) for v in input_shape)
    K = w.shape[0]
    if not _is_depthwise(C, K, groups):
        return conv_dense.conv2d_backward_input(be, dy, w, input_shape, stride, pad, dilation,
                                                groups)
    stride, pad, dilation = _geometry(stride, pad, dilation)
    code = be.dtype_code(op, "grad_output", dy)
    dy, w = be.contiguous(dy), be.contiguous(w)
    dx = be.empty((N, C, H, W), dy.dtype)
    be.mod.depthwise_conv2d_backward_input(code, be.ptr(dy), be.ptr(w), be.ptr(dx),
                                           (N, C, H, W), tuple(w.shape), stride, pad, dilation,
                                           int(groups), be.stream())
    return dx


def conv2d_backward_weight(be, dy, x, weight_shape, stride, pad, dilation, groups):
    op = "conv2d_backward_weight"
    C = x.shape[1]
    wshape = tuple(int(v) for v in weight_shape)
    if not _is_depthwise(C, wshape[0], groups):
        return conv_dense.conv2d_backward_weight(be, dy, x, weight_shape, stride, pad, dilation,
                                                 groups)
    stride, pad, dilation = _geometry(stride, pad, dilation)
    code = be.dtype_code(op, "input", x)
    dy, x = be.contiguous(dy), be.contiguous(x)
    xshape = tuple(x.shape)
    nbytes = be.mod.depthwise_conv2d_backward_weight_workspace_bytes(
        code, xshape, wshape, stride, pad, dilation, int(groups))
    ws = be.workspace(nbytes)
    dw = be.empty(wshape, x.dtype)
    be.mod.depthwise_conv2d_backward_weight(code, be.ptr(dy), be.ptr(x), be.ptr(dw), be.ptr(ws),
                                            int(nbytes), xshape, wshape, stride, pad, dilation,
                                            int(groups), be.stream())
    return dw


def conv2d_backward_bias(be, dy):
    op = "conv2d_backward_bias"
    code = be.dtype_code(op, "grad_output", dy)
    dy = be.contiguous(dy)
    shape = tuple(int(v) for v in dy.shape)
    nbytes = be.mod.conv2d_backward_bias_workspace_bytes(code, shape)
    ws = be.workspace(nbytes)
    db = be.empty((shape[1],), dy.dtype)
    be.mod.conv2d_backward_bias(code, be.ptr(dy), be.ptr(db), be.ptr(ws), int(nbytes), shape,
                                be.stream())
    return db
