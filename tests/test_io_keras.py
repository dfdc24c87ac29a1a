"""fastconv.io and Keras HDF5 files: the three layouts Keras writes (built here with h5py, as
Keras is not a test dependency), and the conversion of Keras layouts to torch's, checked
numerically: a convolution computed channels-last with the Keras kernel equals fastconv.ref's
channels-first convolution with the converted kernel."""
import json
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import fastconv.io as fio
from fastconv import ref

h5py = pytest.importorskip("h5py")

# A tiny model: 5x5x3 input -> conv1 (3x3, valid) -> bn1 -> dw (3x3 depthwise x2, same) ->
# Flatten (3x3x8 = 72) -> fc (Dense 2); 'input_layer' and 'flatten' have no weights.
LAYERS = [("input_layer", "InputLayer", "input_layer", []),
          ("conv1", "Conv2D", "conv2d", [("kernel", (3, 3, 3, 4)), ("bias", (4,))]),
          ("bn1", "BatchNormalization", "batch_normalization",
           [("gamma", (4,)), ("beta", (4,)), ("moving_mean", (4,)), ("moving_variance", (4,))]),
          ("dw", "DepthwiseConv2D", "depthwise_conv2d",
           [("depthwise_kernel", (3, 3, 4, 2)), ("bias", (8,))]),
          ("flatten", "Flatten", "flatten", []),
          ("fc", "Dense", "dense", [("kernel", (72, 2)), ("bias", (2,))])]
FLATTEN_SHAPE = (3, 3, 8)


@pytest.fixture
def weights(rng):
    """The raw Keras arrays, keyed as fastconv.io.load returns them."""
    return {f"{layer}/{var}": rng.standard_normal(shape).astype(np.float32)
            for layer, _, _, variables in LAYERS for var, shape in variables}


def write_legacy(path, weights, *, whole_model=True, keras3_names=False, chunked=False):
    """Layout (a) (whole model, under /model_weights) or (b) (weights only, at the root).
    keras3_names: weight names without ':0' and a depthwise kernel called 'kernel', with the
    layer classes in the model_config attribute (what Keras 3's model.save('x.h5') writes);
    otherwise tf.keras 2 names ('conv1/kernel:0', 'dw/depthwise_kernel:0')."""
    with h5py.File(path, "w") as f:
        if whole_model:
            layers = [{"class_name": cls, "config": {"name": name}}
                      for name, cls, _, _ in LAYERS]
            f.attrs["model_config"] = json.dumps(
                {"class_name": "Sequential", "config": {"name": "tiny", "layers": layers}})
            g = f.create_group("model_weights")
            f.create_group("optimizer_weights").create_dataset("iter", data=np.int64(5))
        else:
            g = f
        names = [name.encode() for name, _, _, _ in LAYERS]
        if chunked:
            g.attrs["layer_names0"], g.attrs["layer_names1"] = names[:2], names[2:]
        else:
            g.attrs["layer_names"] = names
        for layer, _, _, variables in LAYERS:
            lg = g.create_group(layer)
            weight_names = []
            for var, _ in variables:
                stored = "kernel" if keras3_names and var == "depthwise_kernel" else var
                weight_names.append(f"{layer}/{stored}" + ("" if keras3_names else ":0"))
                lg.create_dataset(weight_names[-1], data=weights[f"{layer}/{var}"])
            lg.attrs["weight_names"] = [n.encode() for n in weight_names]
    return path


def write_keras3(path, weights):
    """Layout (c): Keras 3 .weights.h5."""
    with h5py.File(path, "w") as f:
        f.create_group("vars").attrs["name"] = "tiny"
        for layer, _, group, variables in LAYERS:
            vars_ = f.create_group(f"layers/{group}/vars")
            vars_.attrs["name"] = layer
            for i, (var, _) in enumerate(variables):
                vars_.create_dataset(str(i), data=weights[f"{layer}/{var}"])
        f.create_group("optimizer/vars").create_dataset("0", data=np.int64(5))
    return path


def write_keras_zip(path, weights, tmp_path):
    write_keras3(tmp_path / "model.weights.h5", weights)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", "{}")
        zf.writestr("config.json", "{}")
        zf.write(tmp_path / "model.weights.h5", "model.weights.h5")
    return path


LAYOUTS = {
    "legacy_model_tf2": lambda p, w, t: write_legacy(p, w),
    "legacy_model_keras3": lambda p, w, t: write_legacy(p, w, keras3_names=True),
    "legacy_weights": lambda p, w, t: write_legacy(p, w, whole_model=False),
    "legacy_chunked_names": lambda p, w, t: write_legacy(p, w, whole_model=False, chunked=True),
    "keras3_weights_h5": lambda p, w, t: write_keras3(p, w),
    "keras_zip": write_keras_zip,
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_the_raw_keras_arrays(tmp_path, weights, layout):
    path = LAYOUTS[layout](tmp_path / "model.h5", weights, tmp_path)
    out = fio.load(path)
    assert sorted(out) == sorted(weights)
    if layout.startswith("legacy"):
        assert list(out) == list(weights)        # the order of layer_names and weight_names
    for key, a in weights.items():
        assert out[key].dtype == a.dtype
        np.testing.assert_array_equal(out[key], a, err_msg=key)


def test_keras3_nested_and_unknown_layers(tmp_path, rng):
    kernel, extra = rng.standard_normal((2, 3)), rng.standard_normal(4)
    with h5py.File(tmp_path / "nested.weights.h5", "w") as f:
        f.create_group("layers/functional/vars").attrs["name"] = "backbone"
        inner = f.create_group("layers/functional/layers/dense_1/vars")
        inner.attrs["name"] = "head"
        inner.create_dataset("0", data=kernel)
        custom = f.create_group("layers/my_layer/vars")
        custom.attrs["name"] = "custom"
        custom.create_dataset("0", data=extra)
    out = fio.load(tmp_path / "nested.weights.h5")
    assert sorted(out) == ["backbone/head/kernel", "custom/0"]
    np.testing.assert_array_equal(out["backbone/head/kernel"], kernel)


def keras_conv(x, kernel, bias):
    """Keras Conv2D, 'valid', stride 1, channels last: x (N, H, W, C), kernel (R, S, C, K)."""
    windows = np.lib.stride_tricks.sliding_window_view(x, kernel.shape[:2], axis=(1, 2))
    return np.einsum("npqcrs,rsck->npqk", windows, kernel) + bias


def keras_depthwise(x, kernel, bias):
    """Keras DepthwiseConv2D, 'valid': kernel (R, S, C, M), output channel c * M + m."""
    windows = np.lib.stride_tricks.sliding_window_view(x, kernel.shape[:2], axis=(1, 2))
    y = np.einsum("npqcrs,rscm->npqcm", windows, kernel)
    return y.reshape(*y.shape[:3], -1) + bias


def torch_conv(x_nhwc, weight, bias, groups=1):
    """fastconv.ref's NCHW convolution ('valid', stride 1) of a channels-last input, returned
    channels last."""
    y = ref.conv2d(x_nhwc.transpose(0, 3, 1, 2), weight, bias, (1, 1), (0, 0, 0, 0), (1, 1),
                   groups)
    return y.transpose(0, 2, 3, 1)


def test_conv_kernel_conversion_matches_keras_convolution(rng, weights):
    x = rng.standard_normal((2, 5, 5, 3))
    k, b = weights["conv1/kernel"], weights["conv1/bias"]
    converted = fio.conv_kernel_to_torch(k)
    assert converted.shape == (4, 3, 3, 3) and converted.flags.c_contiguous
    np.testing.assert_allclose(torch_conv(x, converted, b), keras_conv(x, k, b), rtol=1e-10,
                               atol=1e-12)


def test_depthwise_kernel_conversion_matches_keras_convolution(rng, weights):
    x = rng.standard_normal((2, 5, 5, 4))
    k, b = weights["dw/depthwise_kernel"], weights["dw/bias"]
    converted = fio.depthwise_kernel_to_torch(k)
    assert converted.shape == (8, 1, 3, 3)
    np.testing.assert_allclose(torch_conv(x, converted, b, groups=4), keras_depthwise(x, k, b),
                               rtol=1e-10, atol=1e-12)


def test_dense_after_flatten_conversion(rng, weights):
    features = rng.standard_normal((2, *FLATTEN_SHAPE))               # (N, h, w, c)
    k, b = weights["fc/kernel"], weights["fc/bias"]
    keras = features.reshape(2, -1) @ k + b                            # Keras flattens h, w, c
    converted = fio.dense_kernel_to_torch(k, FLATTEN_SHAPE)
    torch_flat = features.transpose(0, 3, 1, 2).reshape(2, -1)         # torch flattens c, h, w
    np.testing.assert_allclose(torch_flat @ converted.T + b, keras, rtol=1e-12)
    np.testing.assert_array_equal(fio.dense_kernel_to_torch(k), k.T)


@pytest.mark.parametrize("layout", ["legacy_model_tf2", "legacy_model_keras3",
                                    "keras3_weights_h5"])
def test_keras_to_torch_layout_names_and_shapes(tmp_path, weights, layout):
    path = LAYOUTS[layout](tmp_path / "model.h5", weights, tmp_path)
    state = fio.keras_to_torch_layout(fio.load(path), flatten_shapes={"fc": FLATTEN_SHAPE})
    assert {k: v.shape for k, v in state.items()} == {
        "conv1.weight": (4, 3, 3, 3), "conv1.bias": (4,), "bn1.weight": (4,), "bn1.bias": (4,),
        "bn1.running_mean": (4,), "bn1.running_var": (4,), "bn1.num_batches_tracked": (),
        "dw.weight": (8, 1, 3, 3),
        "dw.bias": (8,), "fc.weight": (2, 72), "fc.bias": (2,)}
    np.testing.assert_array_equal(state["bn1.running_var"], weights["bn1/moving_variance"])
    np.testing.assert_array_equal(state["fc.weight"],
                                  fio.dense_kernel_to_torch(weights["fc/kernel"], FLATTEN_SHAPE))
    converted = fio.load(path, convert="torch")
    np.testing.assert_array_equal(converted["fc.weight"], weights["fc/kernel"].T)
    np.testing.assert_array_equal(converted["dw.weight"], state["dw.weight"])


def keras_forward(x, w, eps=1e-3):
    """The tiny model in numpy, channels last, as Keras computes it (BatchNorm in inference)."""
    y = keras_conv(x, w["conv1/kernel"], w["conv1/bias"])
    y = (y - w["bn1/moving_mean"]) / np.sqrt(w["bn1/moving_variance"] + eps) * w["bn1/gamma"] \
        + w["bn1/beta"]
    y = np.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)))                  # 'same' for 3x3, stride 1
    y = keras_depthwise(y, w["dw/depthwise_kernel"], w["dw/bias"])
    return y.reshape(len(x), -1) @ w["fc/kernel"] + w["fc/bias"]


def test_converted_weights_run_in_torch(torch, tmp_path, rng, weights):
    """The converted state dict loads strictly into the same model built with torch, which then
    computes what the Keras model computes."""
    weights["bn1/moving_variance"] = np.abs(weights["bn1/moving_variance"]) + 0.5
    path = write_legacy(tmp_path / "model.h5", weights, keras3_names=True)
    nn = torch.nn
    model = nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 4, 3), bn1=nn.BatchNorm2d(4, eps=1e-3),
                               dw=nn.Conv2d(4, 8, 3, padding=1, groups=4), flatten=nn.Flatten(),
                               fc=nn.Linear(72, 2))).double().eval()
    state = fio.keras_to_torch_layout(fio.load(path), flatten_shapes={"fc": FLATTEN_SHAPE})
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    x = rng.standard_normal((2, 5, 5, 3))
    with torch.no_grad():
        y = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(y, keras_forward(x, weights), rtol=1e-5, atol=1e-6)


def test_separable_and_transposed_names(rng):
    raw = {"sep/depthwise_kernel": rng.standard_normal((3, 3, 4, 1)),
           "sep/pointwise_kernel": rng.standard_normal((1, 1, 4, 6)),
           "sep/bias": rng.standard_normal(6),
           "up/kernel": rng.standard_normal((2, 2, 5, 7)),            # Conv2DTranspose (out=5)
           "emb/embeddings": rng.standard_normal((10, 3))}
    state = fio.keras_to_torch_layout(raw)
    assert {k: v.shape for k, v in state.items()} == {
        "sep.depthwise.weight": (4, 1, 3, 3), "sep.pointwise.weight": (6, 4, 1, 1),
        "sep.pointwise.bias": (6,), "up.weight": (7, 5, 2, 2), "emb.weight": (10, 3)}


def test_conversion_errors(weights):
    with pytest.raises(ValueError, match="'conv1' is not '<layer>/<variable>'"):
        fio.keras_to_torch_layout({"conv1": weights["conv1/kernel"]})
    with pytest.raises(ValueError, match="flatten_shapes names 'nope'"):
        fio.keras_to_torch_layout(weights, flatten_shapes={"nope": (1, 1, 72)})
    with pytest.raises(ValueError, match="flatten_shapes names 'conv1', whose kernel"):
        fio.keras_to_torch_layout(weights, flatten_shapes={"conv1": (3, 3, 3)})
    with pytest.raises(ValueError, match=r"flatten_shape \(2, 2, 8\) does not have .* 72"):
        fio.dense_kernel_to_torch(weights["fc/kernel"], (2, 2, 8))
    with pytest.raises(ValueError, match="expected \\(\\*spatial, in, multiplier\\)"):
        fio.depthwise_kernel_to_torch(np.ones((3, 3)))


def test_h5_errors(tmp_path, monkeypatch):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.ones(3)
    with pytest.raises(fio.FileFormatError, match="without Keras weights"):
        fio.load(tmp_path / "other.h5")
    with h5py.File(tmp_path / "huge.h5", "w") as f:                 # declared, never written
        f.attrs["layer_names"] = [b"fc"]
        f.create_group("fc").attrs["weight_names"] = [b"fc/kernel:0"]
        f["fc"].create_dataset("fc/kernel:0", shape=(10**6, 10**5), dtype="f4")
    with pytest.raises(fio.CorruptFileError, match="huge.h5.*more than the file can hold"):
        fio.load(tmp_path / "huge.h5")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r'pip install "fastconv\[h5\]"'):
        fio.load(tmp_path / "other.h5")


def test_damaged_h5_raises_only_our_errors(tmp_path, weights):
    data = write_legacy(tmp_path / "model.h5", weights).read_bytes()
    rng = np.random.default_rng(0)                                   # fixed: reproducible cases
    cases = [data[:cut] for cut in range(0, len(data), 199)]
    for _ in range(40):
        flipped = bytearray(data)
        flipped[rng.integers(len(data))] ^= 1 << rng.integers(8)
        cases.append(bytes(flipped))
    damaged = tmp_path / "damaged.h5"
    for case in cases:
        damaged.write_bytes(case)
        try:
            fio.load(damaged)
        except fio.FileFormatError as e:
            assert "damaged.h5" in str(e)


# ---- hostile files: other files' data, links, attributes, inflation, bit flips ------------------

def legacy_with(path, make_kernel, *, attrs=None):
    """A layout (b) file with one layer 'fc' whose weight 'fc/kernel:0' is made by
    make_kernel(layer_group, name); attrs override the root attributes."""
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["layer_names"] = [b"fc"]
        lg = f.create_group("fc")
        lg.attrs["weight_names"] = [b"fc/kernel:0"]
        make_kernel(lg, "fc/kernel:0")
        for name, value in (attrs or {}).items():
            f.attrs[name] = value
    return path


def test_h5_external_storage_is_refused(tmp_path):
    """create_dataset(external=...) would hand back the bytes of another local file."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"password" * 8)
    path = legacy_with(tmp_path / "ext.h5", lambda g, n: g.create_dataset(
        n, shape=(16,), dtype="f4", external=[(str(secret), 0, 64)]))
    with pytest.raises(fio.UnsafeFileError, match=r"ext.h5.*'fc/kernel:0'.* external file "
                                                  r".*secret.bin"):
        fio.load(path)


def test_h5_virtual_dataset_is_refused(tmp_path):
    with h5py.File(tmp_path / "source.h5", "w") as f:
        f["data"] = np.arange(4.0)
    def virtual(g, name):
        layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
        layout[:] = h5py.VirtualSource(str(tmp_path / "source.h5"), "data", shape=(4,))
        g.create_virtual_dataset(name, layout)
    with pytest.raises(fio.UnsafeFileError, match=r"vds.h5.*virtual dataset"):
        fio.load(legacy_with(tmp_path / "vds.h5", virtual))


@pytest.mark.parametrize("where", ["weight", "layer", "model_weights", "keras3_vars"])
def test_h5_external_links_are_refused_before_they_are_followed(tmp_path, where):
    """The link target does not exist: had the loader followed it, h5py would fail to open it
    (a CorruptFileError); refusing it by its type gives UnsafeFileError."""
    link = h5py.ExternalLink(str(tmp_path / "missing.h5"), "/w")
    path = tmp_path / "link.h5"
    if where == "weight":
        legacy_with(path, lambda g, n: g.__setitem__(n, link))
    elif where == "layer":
        with h5py.File(path, "w") as f:
            f.attrs["layer_names"] = [b"fc"]
            f["fc"] = link
    elif where == "model_weights":
        with h5py.File(path, "w") as f:
            f["model_weights"] = link
    else:
        with h5py.File(path, "w") as f:
            f.create_group("layers/dense")["vars"] = link
    with pytest.raises(fio.UnsafeFileError, match=r"link.h5.*external link to '/w' in the "
                                                  r"file .*missing.h5"):
        fio.load(path)


def test_h5_soft_links_stay_inside_the_file(tmp_path, rng):
    kernel = rng.standard_normal((2, 3)).astype(np.float32)
    def inside(g, name):
        g.file["stash/kernel"] = kernel
        g[name] = h5py.SoftLink("/stash/kernel")
    np.testing.assert_array_equal(fio.load(legacy_with(tmp_path / "soft.h5", inside))["fc/kernel"],
                                  kernel)
    def through_external(g, name):
        g.file["out"] = h5py.ExternalLink(str(tmp_path / "missing.h5"), "/")
        g[name] = h5py.SoftLink("/out/kernel")
    with pytest.raises(fio.UnsafeFileError, match="external link"):
        fio.load(legacy_with(tmp_path / "leave.h5", through_external))
    def loop(g, name):
        g["a"], g[name] = h5py.SoftLink("/fc/b"), h5py.SoftLink("/fc/a")
        g["b"] = h5py.SoftLink("/fc/a")
    with pytest.raises(fio.CorruptFileError, match=r"loop.h5.*more than 32 soft links"):
        fio.load(legacy_with(tmp_path / "loop.h5", loop))
    with pytest.raises(fio.CorruptFileError, match=r"dangling.h5.*no object '/nowhere'"):
        fio.load(legacy_with(tmp_path / "dangling.h5",
                             lambda g, n: g.__setitem__(n, h5py.SoftLink("/nowhere"))))


@pytest.mark.parametrize("value,message", [
    (np.arange(3), r"attribute 'layer_names' has type int64 and shape \(3,\)"),
    (np.array([[b"fc"]]), r"attribute 'layer_names' has type \|S2 and shape \(1, 1\)"),
    (np.array([b"x"] * 100_001), r"attribute 'layer_names' has type \|S1 and shape \(100001,\)"),
])
def test_h5_attributes_are_checked_before_they_are_read(tmp_path, value, message):
    path = legacy_with(tmp_path / "attrs.h5", lambda g, n: g.create_dataset(n, data=np.ones(2)),
                       attrs={"layer_names": value})
    with pytest.raises(fio.CorruptFileError, match="attrs.h5.*" + message):
        fio.load(path)


def test_h5_compressed_dataset_inflation_is_capped(tmp_path, monkeypatch):
    zeros = np.zeros(1 << 18, np.float32)                              # 1 MiB, ~1 kB compressed
    path = legacy_with(tmp_path / "bomb.h5", lambda g, n: g.create_dataset(
        n, data=zeros, compression="gzip", compression_opts=9, chunks=(1 << 16,)))
    assert path.stat().st_size < 100_000
    np.testing.assert_array_equal(fio.load(path)["fc/kernel"], zeros)
    with pytest.raises(fio.UnsafeFileError, match=r"bomb.h5: weight 'fc/kernel:0' of layer 'fc' "
                                                  r"inflates to 1,048,576 bytes.*cap of 100,000 "
                                                  r"bytes.*max_bytes=N.*FASTCONV_LOAD_MAX_BYTES"):
        fio.load(path, max_bytes=100_000)
    monkeypatch.setenv("FASTCONV_LOAD_MAX_BYTES", "100000")
    with pytest.raises(fio.UnsafeFileError, match="cap of 100,000 bytes"):
        fio.load(path)
    assert fio.load(path, max_bytes=1 << 20)["fc/kernel"].shape == zeros.shape
    monkeypatch.setenv("FASTCONV_LOAD_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="FASTCONV_LOAD_MAX_BYTES environment variable must be"):
        fio.load(path)


# A subprocess, so that a crash inside HDF5 fails this test instead of killing pytest.
_FUZZ = """
import sys
import numpy as np
import fastconv.io as fio
data, out = open(sys.argv[1], "rb").read(), sys.argv[2]
rng = np.random.default_rng(int(sys.argv[3]))
for case in range(int(sys.argv[4])):
    changed = bytearray(data)
    for i in rng.integers(len(data), size=rng.integers(1, 4)):
        changed[i] ^= 1 << rng.integers(8)
    open(out, "wb").write(changed)
    try:
        fio.load(out)
    except fio.FileFormatError as e:
        assert "fuzz.h5" in str(e), (case, e)
"""


@pytest.mark.parametrize("layout", ["legacy_model_tf2", "keras3_weights_h5"])
def test_bit_flipped_h5_raises_only_our_errors(tmp_path, weights, layout):
    original = LAYOUTS[layout](tmp_path / "model.h5", weights, tmp_path)
    r = subprocess.run([sys.executable, "-c", _FUZZ, str(original), str(tmp_path / "fuzz.h5"),
                        "2024", "100"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"exit status {r.returncode}: {r.stderr[-3000:]}"


def test_h5_parse_hang_and_crash_are_contained(tmp_path, weights, monkeypatch):
    """HDF5 runs in a forked child: a loop (past H5_TIMEOUT_S) or a crash there is a
    CorruptFileError here, and the caller lives on."""
    import os
    import signal
    import time
    from fastconv.io import keras_h5
    if not hasattr(os, "fork"):
        pytest.skip("no os.fork: the parse runs in this process")
    path = write_legacy(tmp_path / "model.h5", weights)
    monkeypatch.setattr(keras_h5, "H5_TIMEOUT_S", 0.5)
    monkeypatch.setattr(keras_h5, "_load_h5_here", lambda *args: time.sleep(60))
    with pytest.raises(fio.CorruptFileError, match=r"model.h5: HDF5 \(h5py\) did not finish "
                                                   r"reading the file in 0.5 s"):
        fio.load(path)
    monkeypatch.setattr(keras_h5, "_load_h5_here",          # a crash, without a core dump
                        lambda *args: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(fio.CorruptFileError, match=r"model.h5: HDF5 \(h5py\) crashed \(SIGKILL\)"):
        fio.load(path)


def test_h5_that_made_hdf5_loop_is_corrupt(tmp_path, weights, monkeypatch):
    """Two bit flips found by fuzzing make HDF5 loop for ever reading the model_config attribute
    (h5py 3.16 / this writer's layout)."""
    from fastconv.io import keras_h5
    data = bytearray(write_legacy(tmp_path / "model.h5", weights).read_bytes())
    data[1745] ^= 0x10
    data[2537] ^= 0x02
    (tmp_path / "loop.h5").write_bytes(data)
    monkeypatch.setattr(keras_h5, "H5_TIMEOUT_S", 2.0)
    with pytest.raises(fio.CorruptFileError, match="loop.h5: HDF5 \\(h5py\\) did not finish"):
        fio.load(tmp_path / "loop.h5")
