"""The documentation runs: every ```python block of README.md, the `fastconv` CLI (`info`, `edges`
on scikit-image's real 'camera' photo) and examples/edge_detection.py, each in a fresh interpreter
in a temporary directory. The edge maps are checked against an independent numpy Laplacian."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "edge_detection.py"


def readme_blocks(lang):
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


PY_BLOCKS = readme_blocks("python")


def run(args, cwd, env=None, timeout=120):
    """Run a command with this interpreter's environment (PYTHONPATH included); fail with its
    output when it exits non-zero."""
    full_env = dict(os.environ, **(env or {}))
    r = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{args} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stdout


def test_readme_has_python_examples():
    assert len(PY_BLOCKS) >= 6


@pytest.mark.parametrize("block", PY_BLOCKS, ids=[f"readme_block{i}" for i in range(len(PY_BLOCKS))])
def test_readme_python_block(block, tmp_path):
    run([sys.executable, "-c", block], cwd=tmp_path)


def test_readme_setup_commands_use_declared_extras():
    """The two commands of the first screen install extras that pyproject.toml declares."""
    first, second = readme_blocks("bash")[:2]
    assert "fastconv finetune" in first and "pytest -q" in second
    pyproject = (ROOT / "pyproject.toml").read_text()
    for cmd in (first, second):
        for extra in re.findall(r'"\.\[(\w+)\]"', cmd):
            assert re.search(rf"^{extra} = \[", pyproject, flags=re.M), extra


def test_cli_info_reads_environment(tmp_path):
    out = run([sys.executable, "-m", "fastconv.cli", "info"], cwd=tmp_path,
              env={"FASTCONV_ISA": "baseline", "FASTCONV_NUM_THREADS": "1"})
    assert "fastconv " in out
    assert "instruction set baseline" in out and "1 threads" in out
    assert "CUDA: " in out


def test_console_script_installed(tmp_path):
    """`fastconv` (pyproject's console script) when fastconv is pip-installed into this
    interpreter's environment; skipped in the PYTHONPATH development loop."""
    script = Path(sys.executable).parent / "fastconv"
    if not script.exists():
        pytest.skip("no fastconv console script next to this interpreter (not pip-installed)")
    assert "instruction set" in run([str(script), "info"], cwd=tmp_path)


def test_cli_unknown_image_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fastconv.cli", "edges", "--image", "missing.png"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1
    assert "--image" in r.stderr and "missing.png" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("blocked, package", [("skimage", "scikit-image"), ("PIL", "Pillow")])
def test_cli_edges_names_the_missing_extra(tmp_path, blocked, package):
    """Without scikit-image or Pillow, `edges` says which package and extra to install."""
    code = (f"import sys; sys.modules[{blocked!r}] = None; sys.modules[{blocked + '.data'!r}] = None; "
            f"sys.modules[{blocked + '.Image'!r}] = None; "
            "from fastconv.cli import main; sys.exit(main(['edges', '--out', 'e.png']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert package in r.stderr and "fastconv[examples]" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "e.png").exists()


# ---- edge detection on the real photo ----------------------------------------------------------


def expected_edges(img_u8):
    """Independent numpy version: Laplacian with zero padding in float64, |.| scaled so that its
    99.5th percentile is 255."""
    from fastconv.cli import EDGE_PERCENTILE
    x = img_u8.astype(np.float64) / 255.0
    H, W = x.shape
    p = np.pad(x, 1)
    nb = sum(p[i:i + H, j:j + W] for i in range(3) for j in range(3))
    mag = np.abs(9 * x - nb)
    return np.clip(np.rint(mag * 255.0 / np.percentile(mag, EDGE_PERCENTILE)), 0, 255)


def flat_mask(img_u8):
    """Pixels whose whole 3x3 neighbourhood (inside the image) has one value."""
    im = img_u8.astype(np.int32)
    H, W = im.shape
    p = np.pad(im, 1, mode="edge")
    win = np.stack([p[i:i + H, j:j + W] for i in range(3) for j in range(3)])
    flat = win.max(0) == win.min(0)
    flat[0, :] = flat[-1, :] = flat[:, 0] = flat[:, -1] = False
    return flat


def check_edge_png(path):
    data = pytest.importorskip("skimage.data")
    Image = pytest.importorskip("PIL.Image")
    camera = data.camera()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (camera.shape[1], camera.shape[0])
        edges = np.asarray(im).astype(np.int32)
    want = expected_edges(camera)
    assert np.max(np.abs(edges - want)) <= 1, "edge map differs from the numpy Laplacian"
    flat = flat_mask(camera)
    assert flat.sum() > 1000 and edges[flat].max() == 0, "response on flat regions must be 0"
    strong = want >= 255  # the top 0.5 % of the reference response
    assert strong.sum() > 0.004 * want.size and np.mean(edges[strong] >= 254) > 0.99
    assert 0.02 < np.mean(edges >= 64) < 0.3, "edges should be a minority of the pixels"


def test_cli_edges_on_camera(tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("PIL")
    out = run([sys.executable, "-m", "fastconv.cli", "edges", "--out", "edges.png"], cwd=tmp_path)
    assert "camera" in out and "edges.png" in out
    check_edge_png(tmp_path / "edges.png")


def test_cli_edges_on_image_file(tmp_path):
    """--image reads a file with Pillow (here the camera photo saved as RGB)."""
    data = pytest.importorskip("skimage.data")
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.stack([data.camera()] * 3, axis=-1)).save(tmp_path / "photo.png")
    run([sys.executable, "-m", "fastconv.cli", "edges", "--image", "photo.png", "--out", "e.png"],
        cwd=tmp_path)
    check_edge_png(tmp_path / "e.png")


def test_example_edge_detection(tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("PIL")
    out = run([sys.executable, str(EXAMPLE), "example.png"], cwd=tmp_path)
    assert "example.png" in out
    check_edge_png(tmp_path / "example.png")
