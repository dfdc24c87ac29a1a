"""Optimizers, learning-rate schedulers and gradient clipping (PyTorch's torch.optim, with the
same update formulas, parameter groups and state_dict layout).

    import fastconv.optim as optim
    opt = optim.AdamW(optim.param_groups_no_decay(model, 0.05), lr=3e-4)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for epoch in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            optim.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        sched.step()

Updates are made in place on each parameter's array (numpy or cupy), so Modules keep their
Parameter objects; parameters without a gradient, or frozen ones, are not touched.

The docstring examples run (tests/test_optim.py) with model = nn.Sequential(nn.Linear(4, 8),
nn.Linear(8, 3)), a batch x, y, loss_fn = nn.CrossEntropyLoss() and
opt = SGD(model.parameters(), lr=0.1).
"""
from fastconv.optim import lr_scheduler
from fastconv.optim.adam import Adam, AdamW
from fastconv.optim.clip import clip_grad_norm_, clip_grad_value_
from fastconv.optim.groups import param_groups_no_decay
from fastconv.optim.optimizer import Optimizer
from fastconv.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler", "clip_grad_norm_",
           "clip_grad_value_", "param_groups_no_decay"]
