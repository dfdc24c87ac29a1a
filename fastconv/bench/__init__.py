"""The benchmark behind `fastconv bench`: fastconv's kernels against PyTorch (CPU) and cuDNN (GPU)
on the layer suite that ships here (suite.json), checked before they are timed.

- harness.py: the suite, the work of each case (FLOPs, bytes), the CPU timing loop, the targets
- cpu.py: the CPU runner;  cuda.py: the GPU runner and the no-GPU projection
- machine.py: machine facts and the ceilings measured in the same run
- report.py: markdown, CSV, JSON and the bar chart of the ratios
- baselines/: cuDNN figures measured on an H200 (the targets without a GPU)

The command is fastconv.commands.bench; the scripts in bench/ call the same code.
"""
