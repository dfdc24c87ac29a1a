"""fastconv.autograd: every Tensor operation's gradient against float64 central differences
(fastconv.testing.gradcheck_autograd), broadcasting in both operands, composite graphs, and the
engine's contract (order, accumulation, retain_graph, no_grad, errors, dtypes, deep graphs)."""
import gc

import numpy as np
import pytest

import fastconv as fc
from fastconv import Function, Tensor
from fastconv.testing import assert_close, gradcheck_autograd


# ---- inputs: fresh random values, kept away from kinks and ties -----------------------------
def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def positive(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def distinct(*shape, slot=0):
    """A shuffled grid of values 0.1 apart in [-3, 3] (up to 60 elements): no ties within a
    central difference. Arrays made with slot 0 and slot 1 share no value either."""
    def make(rng):
        n = int(np.prod(shape))
        return ((2 * rng.permutation(n) + slot + rng.uniform(0.2, 0.8, n)) * 0.05 - 3.0
                ).reshape(shape)
    return make


def away(*shape, points=(0.0,), margin=0.05):
    """Standard normal values moved at least `margin` away from each of `points` (kinks)."""
    def make(rng):
        x = rng.standard_normal(shape)
        for p in points:
            near = np.abs(x - p) < margin
            x[near] = p + np.where(x[near] >= p, 2, -2) * margin
        return x
    return make


IDX = np.array([[0, 2], [2, 2]])
MASK = np.array([[True, False, True, True], [False, False, True, False], [True, True, False, True]])

# (id, fn of Tensors, input makers)
OP_CASES = [
    ("add_scalar", lambda a: 2.5 + a + 1, [normal(3, 4)]),
    ("sub_scalar", lambda a: 1 - a - 0.5, [normal(3, 4)]),
    ("mul_scalar", lambda a: 3 * a * -0.5, [normal(3, 4)]),
    ("div_scalar", lambda a: a / 3.0, [normal(3, 4)]),
    ("rdiv_scalar", lambda a: 2.0 / a, [positive(3, 4)]),
    ("rdiv_negative", lambda a: 2.0 / -a, [positive(5)]),
    ("array_operand", lambda a: a * np.arange(1.0, 5.0) - np.ones((3, 1)), [normal(3, 4)]),
    ("matmul", lambda a, b: a @ b, [normal(3, 4), normal(4, 5)]),
    ("matmul_batched", lambda a, b: a @ b, [normal(2, 3, 4), normal(2, 4, 5)]),
    ("matmul_broadcast_left", lambda a, b: a @ b, [normal(3, 4), normal(2, 4, 5)]),
    ("matmul_broadcast_right", lambda a, b: a @ b, [normal(2, 3, 4), normal(4, 5)]),
    ("matmul_broadcast_both", lambda a, b: a @ b, [normal(2, 1, 3, 4), normal(3, 4, 2)]),
    ("rmatmul_array", lambda a: np.arange(6.0).reshape(2, 3) @ a, [normal(3, 4)]),
    ("neg", lambda a: -a, [normal(3, 4)]),
    ("pos", lambda a: +a * 2, [normal(3)]),
    ("pow_int", lambda a: a ** 3, [normal(3, 4)]),
    ("pow_square", lambda a: a ** 2, [normal(3, 4)]),
    ("pow_half", lambda a: a ** 0.5, [positive(3, 4)]),
    ("pow_negative", lambda a: a ** -1.5, [positive(3, 4)]),
    ("pow_tensor", lambda a, b: a ** b, [positive(3, 4), normal(3, 4)]),
    ("pow_tensor_broadcast", lambda a, b: a ** b, [positive(3, 1), normal(4)]),
    ("exp", lambda a: a.exp(), [normal(3, 4)]),
    ("log", lambda a: a.log(), [positive(3, 4)]),
    ("sqrt", lambda a: a.sqrt(), [positive(3, 4)]),
    ("abs", lambda a: a.abs(), [away(3, 4)]),
    ("clamp", lambda a: a.clamp(-0.5, 0.7), [away(4, 5, points=(-0.5, 0.7))]),
    ("clamp_min", lambda a: a.clamp(min=0.2), [away(4, 5, points=(0.2,))]),
    ("clamp_max", lambda a: a.clip(max=-0.1), [away(4, 5, points=(-0.1,))]),
    ("relu", lambda a: a.relu(), [away(4, 5)]),
    ("sigmoid", lambda a: (3 * a).sigmoid(), [normal(4, 5)]),
    ("tanh", lambda a: (2 * a).tanh(), [normal(4, 5)]),
    ("sum_all", lambda a: a.sum(), [normal(3, 4, 5)]),
    ("sum_axis", lambda a: a.sum(1), [normal(3, 4, 5)]),
    ("sum_negative_axis", lambda a: a.sum(axis=-1), [normal(3, 4, 5)]),
    ("sum_axes_keepdims", lambda a: a.sum((0, 2), keepdims=True), [normal(3, 4, 5)]),
    ("sum_0d", lambda a: a.sum() * a.sum(), [normal()]),
    ("mean_all", lambda a: a.mean(), [normal(3, 4, 5)]),
    ("mean_axis_keepdims", lambda a: a.mean(axis=1, keepdims=True), [normal(3, 4, 5)]),
    ("mean_axes", lambda a: a.mean(axis=(0, -1)), [normal(3, 4, 5)]),
    ("var_all", lambda a: a.var(), [normal(3, 4, 5)]),
    ("var_axis_keepdims", lambda a: a.var(axis=2, keepdims=True), [normal(3, 4, 5)]),
    ("var_unbiased", lambda a: a.var(axis=(0, 1), unbiased=True), [normal(3, 4, 5)]),
    ("max_all", lambda a: a.max(), [distinct(3, 4, 5)]),
    ("max_axis", lambda a: a.max(1), [distinct(3, 4, 5)]),
    ("max_axes_keepdims", lambda a: a.max(axis=(0, 2), keepdims=True), [distinct(3, 4, 5)]),
    ("reshape", lambda a: a.reshape(4, 15) * np.arange(15.0), [normal(3, 4, 5)]),
    ("reshape_tuple", lambda a: a.reshape((5, -1)), [normal(3, 4, 5)]),
    ("view", lambda a: a.view(-1, 5), [normal(3, 4, 5)]),
    ("flatten", lambda a: a.flatten(), [normal(3, 4, 5)]),
    ("flatten_range", lambda a: a.flatten(1, 2), [normal(2, 3, 4, 5)]),
    ("transpose", lambda a: a.transpose(0, 2) * np.arange(3.0), [normal(3, 4, 5)]),
    ("T", lambda a: a.T @ a, [normal(3, 4)]),
    ("permute", lambda a: a.permute(2, 0, 1) * np.arange(4.0), [normal(3, 4, 5)]),
    ("permute_tuple", lambda a: a.permute((1, 2, 0)), [normal(3, 4, 5)]),
    ("unsqueeze", lambda a: a.unsqueeze(1) * np.arange(1.0, 3.0).reshape(2, 1), [normal(3, 4)]),
    ("unsqueeze_negative", lambda a: a.unsqueeze(-1) * np.arange(2.0), [normal(3, 4)]),
    ("squeeze", lambda a: a.squeeze() * np.arange(4.0), [normal(3, 1, 4, 1)]),
    ("squeeze_dim", lambda a: a.squeeze(1), [normal(3, 1, 4, 1)]),
    ("index_int", lambda a: a[1], [normal(3, 4)]),
    ("index_negative_int", lambda a: a[-1, 2], [normal(3, 4)]),
    ("index_slices", lambda a: a[::2, 1:], [normal(5, 4)]),
    ("index_negative_step", lambda a: a[::-1, ::-2], [normal(5, 4)]),
    ("index_none_ellipsis", lambda a: a[None, ..., 1], [normal(3, 4, 5)]),
    ("index_fancy_repeated", lambda a: a[[0, 2, 0, 0]], [normal(3, 4)]),
    ("index_fancy_2d_array", lambda a: a[IDX], [normal(3, 4)]),
    ("index_fancy_pairs", lambda a: a[[0, 1, 1, 0], [2, 2, 0, 2]], [normal(3, 4)]),
    ("index_mixed", lambda a: a[:, [1, 1, 3]], [normal(3, 4)]),
    ("index_bool_mask", lambda a: a[MASK], [normal(3, 4)]),
    ("index_tensor", lambda a: a[Tensor(np.array([2, 0, 2]))], [normal(3, 4)]),
    ("index_tuple_with_tensor", lambda a: a[Tensor(np.array([1, 1])), 1:3], [normal(3, 4)]),
    ("concat", lambda a, b, c: fc.concat([a, b, c], axis=1), [normal(2, 3), normal(2, 1), normal(2, 4)]),
    ("concat_negative_axis", lambda a, b: fc.cat([a, b], axis=-1), [normal(2, 3), normal(2, 2)]),
    ("concat_with_array", lambda a: fc.concat([a, np.ones((1, 3))], axis=0), [normal(2, 3)]),
    ("stack", lambda a, b: fc.stack([a, b]), [normal(2, 3), normal(2, 3)]),
    ("stack_last_axis", lambda a, b, c: fc.stack([a, b, c], axis=-1), [normal(2, 3)] * 3),
    ("where", lambda a, b: fc.where(MASK, a, b), [normal(3, 4), normal(3, 4)]),
    ("where_broadcast", lambda a, b: fc.where(MASK, a, b), [normal(4), normal(3, 1)]),
    ("where_tensor_condition", lambda a, b: fc.where(a > b, a, b), [distinct(3, 4), distinct(3, 4, slot=1)]),
    ("where_scalar", lambda a: fc.where(MASK, a, 0.0), [normal(3, 4)]),
    ("maximum", lambda a, b: fc.maximum(a, b), [distinct(3, 4), distinct(3, 4, slot=1)]),
    ("minimum", lambda a, b: fc.minimum(a, b), [distinct(3, 4), distinct(3, 4, slot=1)]),
    ("maximum_broadcast", lambda a, b: fc.maximum(a, b), [distinct(3, 1), distinct(1, 4, slot=1)]),
    ("maximum_scalar", lambda a: fc.minimum(a, 0.3), [away(3, 4, points=(0.3,))]),
    ("astype_same", lambda a: a.astype(np.float64) * 2, [normal(3)]),
    ("to_cpu", lambda a: a.to("cpu").double() * 2, [normal(3)]),
    # composite graphs
    ("node_used_twice", lambda a: a * a + a, [normal(3, 4)]),
    ("leaf_in_both_operands", lambda a: (a @ a.T).sum(1, keepdims=True) - a / (a * a + 1),
     [normal(3, 4)]),
    ("diamond", lambda a: (lambda b: b.sigmoid() * b.tanh() + b)(a.exp() * 0.5), [normal(3, 4)]),
    ("diamond_of_diamonds", lambda a: (lambda b: (lambda c: c * c.exp())(b + b * b))(a * 0.3),
     [normal(3, 4)]),
    ("shared_subgraph_two_inputs", lambda a, b: (lambda s: s.sum(0) * s.max(1).sum())(a * b),
     [distinct(3, 4), distinct(3, 4, slot=1)]),
    ("softmax_by_hand", lambda a: a.exp() / a.exp().sum(axis=1, keepdims=True), [normal(3, 4)]),
    ("mlp_by_hand", lambda x, w, b: ((x @ w.T + b).tanh() ** 2).mean(), [normal(5, 3), normal(4, 3), normal(4)]),
]

# broadcasting in both operands, for every binary operator
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "pow": lambda a, b: a ** b, "maximum": fc.maximum,
    "minimum": fc.minimum, "where": lambda a, b: fc.where(MASK[:, :1], a, b),
}
SHAPES = [((3, 4), (3, 4)), ((2, 3, 1), (4,)), ((3, 1), (1, 4)), ((), (3, 4)), ((3, 4), (1,))]


@pytest.mark.parametrize("case", OP_CASES, ids=[c[0] for c in OP_CASES])
def test_op_gradient(case, rng):
    name, fn, makers = case
    gradcheck_autograd(fn, [m(rng) for m in makers], rng, name=name)


@pytest.mark.parametrize("shapes", SHAPES, ids=[f"{a}x{b}" for a, b in SHAPES])
@pytest.mark.parametrize("op", BINARY)
def test_binary_broadcast_gradient(op, shapes, rng):
    for sa, sb in (shapes, shapes[::-1]):  # the broadcast operand on either side
        a, b = distinct(*sa)(rng), distinct(*sb, slot=1)(rng)
        if op == "pow":
            a = np.abs(a) + 0.5
        if op == "div":
            b = np.sign(b) * (np.abs(b) + 0.5)
        gradcheck_autograd(BINARY[op], [a, b], rng, name=f"{op}{sa}x{sb}")


def test_astype_gradient_comes_back_in_source_dtype():
    x = fc.tensor(np.array([1.5, -2.0, 3.0], np.float32), requires_grad=True)
    y = x.astype(np.float64)
    assert y.dtype == np.float64
    (y * np.array([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [1.0, 2.0, 3.0])


def test_astype_to_int_is_not_differentiable():
    x = fc.tensor([1.7, -2.2], requires_grad=True)
    i = x.astype(np.int64)
    assert i.dtype == np.int64 and not i.requires_grad
    np.testing.assert_array_equal(i.numpy(), [1, -2])


def test_pow_of_a_number_by_a_tensor(rng):
    gradcheck_autograd(lambda a: 2.0 ** a + 3 ** (a * 0.5), [normal(3, 4)(rng)], rng, name="rpow")


# ---- the engine ---------------------------------------------------------------------------------
class Logged(Function):
    """Identity that records the order in which backward visits it."""
    log = []

    def forward(self, a, *, tag):
        self.tag = tag
        return a.copy()

    def backward(self, g):
        Logged.log.append(self.tag)
        return g


def test_backward_order_is_deterministic_and_topological():
    orders = []
    for _ in range(3):
        Logged.log = []
        a = fc.tensor(np.ones(3), requires_grad=True)
        b = Logged.apply(a, tag="b")
        c, d = Logged.apply(b, tag="c"), Logged.apply(b * 2, tag="d")
        e = Logged.apply(c + d + b, tag="e")
        e.sum().backward()
        orders.append(list(Logged.log))
        np.testing.assert_array_equal(a.grad, [4.0, 4.0, 4.0])
    assert orders[0] == orders[1] == orders[2]
    order = orders[0]
    # each node runs after every node that uses it; depth-first over inputs in argument order
    assert order.index("b") > max(order.index("c"), order.index("d")) > order.index("e")
    assert order == ["e", "d", "c", "b"]


def test_custom_function_gradient(rng):
    class Cube(Function):
        def forward(self, a):
            self.a = a
            return a ** 3

        def backward(self, g):
            return 3 * g * self.a ** 2

    gradcheck_autograd(lambda a: Cube.apply(a * 2), [normal(3, 4)(rng)], rng, name="Cube")


def test_gradients_accumulate_over_backward_calls():
    x = fc.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    (x * x).sum().backward()
    (3 * x).sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * x.numpy() + 3)


def test_retain_graph_allows_a_second_backward():
    x = fc.tensor(np.array([1.0, -2.0]), requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.copy()
    y.backward()
    assert_close(x.grad, 2 * first, name="accumulated")
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_second_backward_through_a_freed_graph_raises():
    x = fc.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * 3
    y.sum().backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph"):
        (y * 2).sum().backward()
    assert y.grad is None and not y.is_leaf
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_no_grad_context_and_decorator_record_nothing():
    x = fc.tensor([1.0, 2.0], requires_grad=True)
    with fc.no_grad():
        assert not fc.is_grad_enabled()
        y = (x * 2).exp().sum()
        with fc.enable_grad():
            z = x * 2
    assert fc.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and y._ctx is None
    assert z.requires_grad and not z.is_leaf

    @fc.no_grad()
    def f(t):
        """doc"""
        return t * t

    w = f(x)
    assert not w.requires_grad and w.is_leaf and f.__doc__ == "doc" and f.__name__ == "f"
    with pytest.raises(RuntimeError, match="does not require grad"):
        w.sum().backward()
    with pytest.raises(KeyError):
        with fc.no_grad():
            raise KeyError("boom")
    assert fc.is_grad_enabled()


def test_backward_of_a_non_scalar_needs_grad():
    x = fc.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="one-element"):
        y.backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\) but the tensor has shape \(2,\)"):
        y.backward(np.ones(3))
    y.backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 20.0])


def test_backward_without_requires_grad_raises():
    x = fc.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        (x * 2).sum().backward()
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        fc.tensor([1, 2], requires_grad=True)


def test_only_leaves_keep_grad():
    x = fc.tensor([1.0, 2.0], requires_grad=True)
    c = fc.tensor([3.0, 4.0])  # no grad wanted
    h = x * c
    (h * h).sum().backward()
    assert x.is_leaf and not h.is_leaf
    assert h.grad is None and c.grad is None
    np.testing.assert_array_equal(x.grad, 2 * x.numpy() * c.numpy() ** 2)


def test_detach_cuts_the_graph_and_shares_data():
    x = fc.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf
    y = (x * d).sum()
    y.backward()
    np.testing.assert_array_equal(x.grad, d.numpy())  # d treated as a constant
    e = x.detach()
    assert e.data is x.data


def test_item():
    assert fc.tensor([[2.5]]).item() == 2.5
    assert isinstance(fc.tensor(3).item(), int)
    with pytest.raises(ValueError, match=r"item: only a one-element tensor.*shape \(2,\)"):
        fc.tensor([1.0, 2.0]).item()


OPS = {"lt": (lambda a, b: a < b, np.less), "le": (lambda a, b: a <= b, np.less_equal),
       "gt": (lambda a, b: a > b, np.greater), "ge": (lambda a, b: a >= b, np.greater_equal),
       "eq": (lambda a, b: a == b, np.equal), "ne": (lambda a, b: a != b, np.not_equal)}


@pytest.mark.parametrize("op", OPS)
def test_comparisons_give_bool_tensors(op):
    ours, ref = OPS[op]
    a = np.array([1.0, 2.0, 3.0], np.float32)
    b = np.array([2.0, 2.0, 1.0], np.float32)
    x = fc.tensor(a, requires_grad=True)
    for other, ob in ((fc.tensor(b), b), (2.0, 2.0)):
        r = ours(x, other)
        assert isinstance(r, Tensor) and r.dtype == np.bool_ and not r.requires_grad
        np.testing.assert_array_equal(r.numpy(), ref(a, ob))


def test_truth_value_of_tensors():
    x = fc.tensor([1.0, 2.0])
    assert bool(x.sum() > 2) and not bool(x.sum() > 5)
    assert not (x[:1] > 5) and (x[1:] > 1)
    with pytest.raises(ValueError, match="ambiguous"):
        bool(x > 0)


SCALAR_OPS = {
    "add": lambda x: x + 1.5, "radd": lambda x: 1.5 + x, "sub": lambda x: x - 2,
    "rsub": lambda x: 2 - x, "mul": lambda x: x * 0.1, "rmul": lambda x: 0.1 * x,
    "div": lambda x: x / 3, "rdiv": lambda x: 3 / x, "pow": lambda x: x ** 2,
    "pow_float": lambda x: x ** 1.5, "numpy_scalar": lambda x: x * np.float64(2.0),
    "numpy_scalar_left": lambda x: np.float64(2.0) * x, "mean": lambda x: x.mean(),
    "var": lambda x: x.var(axis=0, unbiased=True), "sqrt": lambda x: x.sqrt(),
    "clamp": lambda x: x.clamp(0.5, 1.0), "maximum": lambda x: fc.maximum(x, 0.5),
    "where": lambda x: fc.where(x > 1, x, 0.0), "exp_log": lambda x: x.exp().log(),
    "sum_keepdims": lambda x: x.sum(0, keepdims=True), "max": lambda x: x.max(),
}


@pytest.mark.parametrize("op", SCALAR_OPS)
def test_float32_stays_float32_with_python_scalars(op):
    x = fc.tensor(np.array([[0.5, 1.0, 2.0], [1.5, 0.7, 3.0]], np.float32), requires_grad=True)
    y = SCALAR_OPS[op](x)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_python_floats_become_float32_and_grads_keep_leaf_shape_and_type():
    x = fc.tensor(2.0, requires_grad=True)
    assert x.dtype == np.float32 and fc.tensor(3).dtype == np.int64
    (x * x).backward()
    assert isinstance(x.grad, np.ndarray) and x.grad.shape == () and x.grad == 4.0


def test_deep_graph_does_not_hit_the_recursion_limit():
    x = fc.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y = y * x  # one more use of x at the end of the chain
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * x.numpy() + 5000)
    del y
    gc.collect()
