"""Reports of a benchmark run: the markdown tables, CSV, JSON and the bar chart of the ratios.

Every function takes the run's rows (one dict per case, direction, dtype and thread count, as the
runners in cpu.py and cuda.py make them) and a `meta` dict: device, machine facts, settings and
the ceilings measured in the same run.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Sequence

from fastconv.bench import harness

fmt = harness.fmt

# CSV: these first (in this order), then any other field in order of first appearance.
FIRST_COLUMNS = ["device", "case", "group", "op", "direction", "dtype", "threads", "n", "shape",
                 "status", "fastconv_us", "torch_nchw_us", "torch_cl_us", "baseline_us", "ratio",
                 "ratio_nchw", "ratio_channels_last", "unit", "fastconv_rate", "baseline_rate",
                 "fastconv_pct_peak", "baseline_pct_peak", "bytes", "flops", "h100_85_us",
                 "h200_cudnn_nchw_us", "h200_cudnn_cl_us", "h200_cudnn_tf32_us", "h100_70_us",
                 "target_us", "fastconv_tflops", "fastconv_pct_h100_peak", "baseline_tflops",
                 "baseline_pct_h100_peak", "torch_tf32_us", "ratio_tf32", "err_fastconv",
                 "err_torch"]


def columns(rows: Sequence[dict]) -> List[str]:
    seen = [c for c in FIRST_COLUMNS if any(c in r for r in rows)]
    for r in rows:
        for k in r:
            if k not in seen:
                seen.append(k)
    return seen


def write_csv(path: str, rows: Sequence[dict]) -> None:
    """One line per row with every field (machine facts included)."""
    _parent(path)
    harness.write_csv(path, list(rows), columns(rows))


def write_json(path: str, rows: Sequence[dict], meta: dict, summary: Sequence[dict] = ()) -> None:
    """{"meta": machine facts, settings and ceilings, "rows": [...], "summary": [...]}; the rows
    carry their own fields only (the facts are in meta)."""
    _parent(path)
    facts = set(meta.get("machine", {})) - {"threads"}
    lean = [{k: v for k, v in r.items() if k not in facts} for r in rows]
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": lean, "summary": list(summary)}, f, indent=1,
                  default=_jsonable)
        f.write("\n")


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


def _parent(path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)


# ---- markdown ---------------------------------------------------------------------------------


def header_lines(meta: dict) -> List[str]:
    m, s = meta["machine"], meta["settings"]
    lines = [f"# fastconv benchmark ({meta['device']})", ""]
    lines.append(f"- CPU: {m.get('cpu')} ({m.get('cores')} usable cores); fastconv "
                 f"{m.get('fastconv_version')}, ISA path {m.get('isa')} (best available: "
                 f"{m.get('best_isa')})")
    if m.get("gpu"):
        lines.append(f"- GPU: {m['gpu']} (compute {m.get('gpu_capability')}, "
                     f"{m.get('gpu_memory_gib')} GiB, {m.get('gpu_sms')} SMs, L2 "
                     f"{fmt((m.get('gpu_l2_bytes') or 0) / 2**20)} MiB), driver {m.get('driver')}, "
                     f"CUDA {m.get('cuda_runtime')}, cuDNN {m.get('cudnn_version')}, CuPy "
                     f"{m.get('cupy_version')}")
    lines.append(f"- PyTorch {m.get('torch_version')}, numpy {m.get('numpy_version')}, Python "
                 f"{m.get('python_version')}"
                 + (f"; threads {', '.join(map(str, s['threads']))}" if s.get("threads") else ""))
    if meta["device"] == "cpu":
        lines.append(f"- median of {s['repeat']} samples after {s['warmup']} warm-up calls, each "
                     f"sample >= {s['min_sample_ms']:g} ms; baseline = the faster of torch NCHW "
                     "and torch channels_last (cl); ratio = fastconv time / baseline time (lower "
                     "is better); times in microseconds")
        for t, c in sorted(meta.get("ceilings", {}).items()):
            lines.append(f"- ceilings measured with {t} thread{'s' if t > 1 else ''}: float32 GEMM "
                         f"{fmt(c['GFLOP/s'])} GFLOP/s, copy {fmt(c['GB/s'])} GB/s (the "
                         "'% peak' columns)")
        if meta.get("load_start") is not None:
            lines.append(f"- load average (1 min) before the run: {fmt(meta['load_start'])}"
                         + ("; **other processes were using the CPU: timings are unreliable**"
                            if harness.busy(meta["load_start"]) else ""))
    elif meta.get("copy_gbps"):
        lines.append(f"- cuDNN with torch.backends.cudnn.benchmark=True, TF32 off; one call per "
                     f"sample between CUDA events, L2 flushed before each "
                     f"({fmt(meta['flush_mib'])} MiB written), median of {s['repeat']} samples "
                     f"after {s['warmup']} warm-up calls; baseline = the faster of torch NCHW and channels_last (cl); ratio = "
                     "fastconv time / baseline time (lower is better); times in microseconds")
        lines.append(f"- GB/s = least DRAM traffic / time; % peak = share of the device-to-device "
                     f"copy bandwidth measured in this run, {fmt(meta['copy_gbps'])} GB/s")
    if meta.get("elapsed_s") is not None:
        lines.append(f"- run took {meta['elapsed_s']:.0f} s")
    return lines + [""]


def cpu_tables(rows: Sequence[dict]) -> List[str]:
    conv = [r for r in rows if r["op"] == "conv2d"]
    pool = [r for r in rows if r["op"] != "conv2d"]
    parts = []
    if conv:
        parts += ["### Convolution (GFLOP/s = 2*N*K*P*Q*(C/groups)*R*S / time; % peak of the "
                  "GEMM ceiling)", "", harness.markdown_table(
                      ["case", "group", "shape", "dir", "fastconv us", "torch nchw us",
                       "torch cl us", "ratio", "fastconv GFLOP/s", "% peak", "baseline GFLOP/s",
                       "check"],
                      [[r["case"], r["group"], r["shape"], r["direction"], r["fastconv_us"],
                        r["torch_nchw_us"], r["torch_cl_us"], r.get("ratio"), r["fastconv_rate"],
                        r.get("fastconv_pct_peak"), r["baseline_rate"], r["status"]]
                       for r in conv]), ""]
    if pool:
        parts += ["### Pooling (GB/s = bytes read + written, int64 indices included / time; "
                  "% peak of the copy ceiling)", "", harness.markdown_table(
                      ["case", "shape", "dir", "fastconv us", "torch nchw us", "torch cl us",
                       "ratio", "vs nchw", "vs cl", "fastconv GB/s", "% peak", "baseline GB/s",
                       "check"],
                      [[r["case"], r["shape"], r["direction"], r["fastconv_us"],
                        r["torch_nchw_us"], r["torch_cl_us"], r.get("ratio"), r.get("ratio_nchw"),
                        r.get("ratio_channels_last"), r["fastconv_rate"],
                        r.get("fastconv_pct_peak"), r["baseline_rate"], r["status"]]
                       for r in pool]), ""]
    return parts


def gpu_table(rows: Sequence[dict]) -> List[str]:
    dense = [r for r in rows if r.get("group") == harness.DENSE]
    other = [r for r in rows if r.get("group") != harness.DENSE]
    parts = []
    if dense:
        parts += ["### Dense and grouped conv vs cuDNN (TFLOP/s = 2*N*K*P*Q*(C/groups)*R*S / "
                  "time; % H100 peak = share of the H100 SXM datasheet dense peak: TF32 494 "
                  "TFLOP/s for float32, BF16/FP16 989; torch tf32 = cuDNN NCHW with TF32 on, "
                  "torch's default and the float32 target; ratio = vs the faster of nchw and cl "
                  "with TF32 off)", "", harness.markdown_table(
                      ["case", "dtype", "shape", "dir", "fastconv us", "torch nchw us",
                       "torch cl us", "torch tf32 us", "ratio", "vs tf32", "fastconv TFLOP/s",
                       "% H100 peak", "baseline TFLOP/s", "baseline % H100 peak",
                       "H200 cuDNN us", "check"],
                      [[r["case"], r["dtype"], r["shape"], r["direction"], r["fastconv_us"],
                        r["torch_nchw_us"], r["torch_cl_us"], r.get("torch_tf32_us"),
                        r.get("ratio"), r.get("ratio_tf32"), r.get("fastconv_tflops"),
                        r.get("fastconv_pct_h100_peak"), r.get("baseline_tflops"),
                        r.get("baseline_pct_h100_peak"),
                        _best(r.get("h200_cudnn_nchw_us"), r.get("h200_cudnn_cl_us")),
                        r["status"]] for r in dense]), ""]
        from fastconv.bench import cuda
        targets = cuda.dense_targets(dense)
        if targets:
            parts += ["Dense conv targets (issue 12; geometric mean of fastconv time / cuDNN "
                      "time over the layers and directions):", "", harness.markdown_table(
                          ["dtype", "vs", "layers x dirs", "geomean ratio", "target", "verdict"],
                          [[t["dtype"], t["versus"], t["layers"], t["geomean"],
                            f"<= {t['target']:g}", t["verdict"]] for t in targets]), ""]
    if other:
        parts += ["### Kernels vs cuDNN (H200 cuDNN = the better of NCHW and cl measured on an "
                  "H200, bench/ANCHORS.md; 85% H100 = bytes at 85% of the H100's copy "
                  "bandwidth)", "", harness.markdown_table(
                      ["case", "dtype", "shape", "dir", "fastconv us", "torch nchw us",
                       "torch cl us", "ratio", "fastconv GB/s", "% peak", "baseline GB/s",
                       "85% H100 us", "H200 cuDNN us", "check"],
                      [[r["case"], r["dtype"], r["shape"], r["direction"], r["fastconv_us"],
                        r["torch_nchw_us"], r["torch_cl_us"], r.get("ratio"), r["fastconv_rate"],
                        r.get("fastconv_pct_peak"), r["baseline_rate"], r["h100_85_us"],
                        _best(r.get("h200_cudnn_nchw_us"), r.get("h200_cudnn_cl_us")),
                        r["status"]] for r in other]), ""]
    return parts


def projection_table(rows: Sequence[dict]) -> List[str]:
    dense = [r for r in rows if r.get("group") == harness.DENSE]
    other = [r for r in rows if r.get("group") != harness.DENSE]
    parts = ["### Targets without a GPU (batch n of the suite)", ""]
    if dense:
        parts += ["Dense and grouped conv. GFLOP = 2*N*K*P*Q*(C/groups)*R*S; 70% H100 = the "
                  "time at 70% of the H100 SXM datasheet dense peak for the dtype (TF32 494 "
                  "TFLOP/s for float32, BF16/FP16 989); H200 cuDNN = PyTorch 2.11 + cuDNN 9.19 "
                  "measured on an H200 (NCHW and channels_last with TF32 off; tf32 = NCHW with "
                  "TF32 on, torch's default); target = 1.0x cuDNN with TF32 on (float32), 1.3x "
                  "the best cuDNN time (bfloat16, float16).", "",
                  harness.markdown_table(
                      ["case", "dtype", "shape", "dir", "GFLOP", "peak TFLOP/s",
                       "70% H100 us", "H200 cuDNN nchw us", "H200 cuDNN cl us",
                       "H200 cuDNN tf32 us", "target us"],
                      [[r["case"], r["dtype"], r["shape"], r["direction"], r["flops"] / 1e9,
                        r["h100_peak_tflops"], r["h100_70_us"], r["h200_cudnn_nchw_us"],
                        r["h200_cudnn_cl_us"], r["h200_cudnn_tf32_us"], r["target_us"]]
                       for r in dense]), ""]
    if other:
        parts += ["Pooling and depthwise. Bytes = least DRAM traffic of the direction; 85% H100 / "
                  "H200 = the time those bytes take at 85% of the copy bandwidth measured on an "
                  "H100 (2436 GB/s) and an H200 (2768 GB/s); H200 cuDNN = PyTorch 2.11 + cuDNN "
                  "9.19 measured on an H200 (NCHW and channels_last); 2x target = half the "
                  "better of the two.", "",
                  harness.markdown_table(
                      ["case", "dtype", "shape", "dir", "MB moved", "85% H100 us",
                       "85% H200 us", "H200 cuDNN nchw us", "H200 cuDNN cl us", "2x target us"],
                      [[r["case"], r["dtype"], r["shape"], r["direction"], r["bytes"] / 1e6,
                        r["h100_85_us"], r["h200_85_us"], r["h200_cudnn_nchw_us"],
                        r["h200_cudnn_cl_us"], r["target_2x_us"]] for r in other]), ""]
    return parts


def _best(*vals):
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def summary_table(summary: Sequence[dict]) -> List[str]:
    if not summary:
        return []
    return ["### Targets", "", harness.markdown_table(
        ["group", "metric", "value", "target", "verdict", "note"],
        [[s["group"], s["metric"], fmt(s["value"], 4), s["target"], s["verdict"], s["note"]]
         for s in summary]), ""]


def failures(rows: Sequence[dict]) -> List[str]:
    bad = [r for r in rows if r.get("status") not in ("ok", "baseline-only", "no GPU: projection")]
    if not bad:
        return []
    return ["Not timed for fastconv: " + ", ".join(
        f"{r['case']} {r['direction']} {r.get('dtype', '')} ({r['status']})" for r in bad), ""]


def render(rows: Sequence[dict], meta: dict,
           summaries: Optional[Dict[int, List[dict]]] = None) -> str:
    """The whole markdown report: header, then per thread count (CPU) or for the device, the
    tables, the target checks and the list of rows fastconv was not timed on."""
    parts = header_lines(meta)
    if meta["device"] == "cuda" and not meta.get("copy_gbps"):
        parts += [f"No GPU: {meta.get('no_gpu_reason')}.", ""] + projection_table(rows)
        return "\n".join(parts)
    if meta["device"] == "cuda":
        parts += gpu_table(rows) + failures(rows)
        return "\n".join(parts)
    thread_counts = sorted({r["threads"] for r in rows})
    for t in thread_counts:
        sub = [r for r in rows if r["threads"] == t]
        parts += [f"## {t} thread{'s' if t > 1 else ''}", ""]
        parts += cpu_tables(sub) + summary_table((summaries or {}).get(t, [])) + failures(sub)
    if len(thread_counts) > 1:
        parts += scaling_table(rows, thread_counts)
    return "\n".join(parts)


def scaling_table(rows: Sequence[dict], thread_counts: Sequence[int]) -> List[str]:
    """Per layer and direction: fastconv's and the baseline's (the faster torch layout) time at
    each thread count, and each one's parallel efficiency from 2 threads (or the fewest) to the
    most: (time at lo / time at hi) / (hi / lo), in percent; 'gap' = fastconv's minus torch's, in
    points (issue 15: within 10 points on every layer)."""
    keys = []
    for r in rows:
        k = (r["case"], r["direction"])
        if k not in keys:
            keys.append(k)
    by = {(r["case"], r["direction"], r["threads"]): r for r in rows}
    lo = 2 if 2 in thread_counts and thread_counts[-1] > 2 else thread_counts[0]
    hi = thread_counts[-1]

    def eff(case, direction, field):
        a = by.get((case, direction, lo), {}).get(field)
        b = by.get((case, direction, hi), {}).get(field)
        return 100.0 * (a / b) / (hi / lo) if a and b and hi > lo else None

    body = []
    for case, direction in keys:
        ours = [by.get((case, direction, t), {}).get("fastconv_us") for t in thread_counts]
        base = [by.get((case, direction, t), {}).get("baseline_us") for t in thread_counts]
        e_ours, e_base = eff(case, direction, "fastconv_us"), eff(case, direction, "baseline_us")
        gap = e_ours - e_base if e_ours is not None and e_base is not None else None
        ratio = by.get((case, direction, hi), {}).get("ratio")
        body.append([case, direction] + ours + base + [e_ours, e_base, gap, ratio])
    return [f"## Thread scaling (us; efficiency {lo}->{hi} threads in %)", "",
            harness.markdown_table(
                ["case", "dir"] + [f"fastconv {t}" for t in thread_counts]
                + [f"torch {t}" for t in thread_counts]
                + [f"eff fastconv", "eff torch", "gap (points)", f"ratio at {hi}"], body), ""]


# ---- the chart --------------------------------------------------------------------------------


RATIO_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 20, 50, 100)


def plot(path: str, rows: Sequence[dict], meta: dict) -> bool:
    """A bar chart of the ratio fastconv time / baseline time per layer and direction (log scale,
    1 = parity, lower is better), one panel per thread count or dtype. Returns False (and draws
    nothing) when no row has a ratio."""
    timed = [r for r in rows if r.get("ratio")]
    if not timed:
        return False
    import matplotlib
    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    panel_key = "threads" if meta["device"] == "cpu" else "dtype"
    panels = []
    for r in timed:
        if r[panel_key] not in panels:
            panels.append(r[panel_key])
    dirs = [d for d in ("fwd", "bwd_input", "bwd_weight", "fwd+bwd")
            if any(r["direction"] == d for r in timed)]
    cases = []
    for r in timed:
        if r["case"] not in cases:
            cases.append(r["case"])
    width = 0.8 / len(dirs)
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(max(6.0, 0.55 * len(cases) + 2), 3.6 * len(panels)))
    colors = {"fwd": "#4C72B0", "bwd_input": "#DD8452", "bwd_weight": "#55A868",
              "fwd+bwd": "#8172B3"}
    machine = meta["machine"]
    where = machine.get("gpu") if meta["device"] == "cuda" else machine.get("cpu")
    for ax, panel in zip(axes[:, 0], panels):
        sub = {(r["case"], r["direction"]): r["ratio"] for r in timed if r[panel_key] == panel}
        for j, d in enumerate(dirs):
            xs = [i + (j - (len(dirs) - 1) / 2) * width for i, c in enumerate(cases)
                  if (c, d) in sub]
            ys = [sub[(c, d)] for c in cases if (c, d) in sub]
            # bars grow from parity (1) down (fastconv faster) or up (slower)
            ax.bar(xs, [y - 1.0 for y in ys], bottom=1.0, width=width, label=d, color=colors[d])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        vals = list(sub.values()) + [1.0]
        ax.set_ylim(min(vals) / 1.25, max(vals) * 1.25)
        ax.yaxis.set_major_locator(ticker.FixedLocator(RATIO_TICKS))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("fastconv / PyTorch time")
        label = (f"{panel} thread{'s' if panel > 1 else ''}" if panel_key == "threads"
                 else str(panel))
        ax.set_title(f"fastconv time / faster PyTorch layout's time, {label}: below 1 = "
                     f"fastconv faster\n{where}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _parent(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
