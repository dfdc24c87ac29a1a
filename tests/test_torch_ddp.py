"""DistributedDataParallel with fastconv's layers: examples/ddp_train.py trains its small CNN
(fastconv.torch Conv2d / MaxPool2d / AvgPool2d / AdaptiveAvgPool2d) in 2 CPU processes over gloo;
after a few SGD steps both ranks must hold identical parameters, equal to one process training on
the whole global batch. The run is bounded: a process group timeout inside, a wall-clock limit
outside that kills the whole process group, so a hang fails instead of blocking CI."""
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed  # noqa: E402

from fastconv.testing import assert_close  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "ddp_train.py"
STEPS, BATCH, LR, SEED = 3, 16, 0.05, 7
WALL_LIMIT_S = 120


def load_script():
    spec = importlib.util.spec_from_file_location("ddp_train", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_bounded(args, cwd):
    """Run args in a new session; on timeout kill the session (the spawned ranks included)."""
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=WALL_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the DDP run did not finish within {WALL_LIMIT_S} s:\n{out}")
    assert proc.returncode == 0, f"the DDP run exited {proc.returncode}:\n{out}"
    return out


@pytest.mark.skipif(not torch.distributed.is_available() or
                    not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_ddp_two_processes_match_one_process(tmp_path):
    run_bounded([sys.executable, str(SCRIPT), "--nprocs", "2", "--steps", str(STEPS), "--batch",
                 str(BATCH), "--lr", str(LR), "--seed", str(SEED), "--timeout", "60", "--save",
                 str(tmp_path / "rank{rank}.pt")], cwd=tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    script = load_script()
    model = script.build_model(SEED)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    for step in range(STEPS):
        images, labels = script.make_batch(step, BATCH, SEED)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    reference = model.state_dict()
    initial = script.build_model(SEED).state_dict()

    assert ranks[0].keys() == ranks[1].keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between the ranks"
        assert_close(ranks[0][name].numpy(), value.numpy(), name=f"{name}: DDP vs one process")
        assert not torch.equal(value, initial[name]), f"{name} was not trained"
