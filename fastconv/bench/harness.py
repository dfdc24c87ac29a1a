"""Shared pieces of the fastconv benchmark runners (fastconv.bench.cpu, fastconv.bench.cuda and the
scripts in bench/): the suite, the work of each case in roofline units, the timing loop, the
targets and the report helpers.

STYLE 11: every runner checks fastconv's result on the shape first, then measures fastconv and the
baseline side by side in one process (interleaved, so drift hits both alike), then reports medians,
GFLOP/s or GB/s, and ratios to the baseline measured in the same run.

    from fastconv.bench import harness
    cases = harness.select_cases(harness.load_suite(), "r50_res2,vgg")
    t = harness.measure({"fastconv": (f, sets_a), "torch": (g, sets_b)}, harness.TimingConfig())
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple



def passive_omp_wait() -> None:
    """Make torch's idle OpenMP workers wait passively; call it before torch is imported.

    They busy-wait for milliseconds after every call. Interleaved with fastconv's calls on a small
    machine they hold the cores fastconv's threads need (measured on 2 cores: a 1.0 ms fastconv
    conv took 2.8 ms right after a torch call), which charged torch's spinning to fastconv.
    Passive waiting leaves torch's own times unchanged (r50_res4_3x3 fwd 8.0 vs 8.2 ms). A
    function, not an import side effect: `fastconv.cli` imports this module for every command.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = os.path.join(HERE, "suite.json")  # ships in the wheel; bench/suite.json links to it

DENSE, DEPTHWISE, POOLING = "dense/grouped", "depthwise", "pooling"
GROUPS = (DENSE, DEPTHWISE, POOLING)

# Directions timed per op family, and the short names used in tables and CSV.
CONV_DIRS = ("fwd", "bwd_input", "bwd_weight")
POOL_DIRS = ("fwd", "fwd+bwd")

# ---- the suite --------------------------------------------------------------------------------


OPS = ("conv2d", "max_pool2d", "avg_pool2d")
_CASE_INTS = {"conv2d": ("n", "n_cpu", "c", "h", "w", "k", "r", "s", "stride", "pad", "groups"),
              "max_pool2d": ("n", "n_cpu", "c", "h", "w", "r", "s", "stride", "pad"),
              "avg_pool2d": ("n", "n_cpu", "c", "h", "w", "r", "s", "stride", "pad")}


def load_suite(path: str = SUITE) -> List[dict]:
    """The cases of a suite file ({"cases": [...]}, see suite.json), in file order. Raises
    ValueError naming the file, the case and the field when a case is malformed."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"suite {path}: cannot read it ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"suite {path}: not valid JSON ({e})") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not cases:
        raise ValueError(f"suite {path}: expected an object with a non-empty list 'cases'")
    seen = set()
    for i, c in enumerate(cases):
        where = f"suite {path}: case {i}"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
            raise ValueError(f"{where}: expected an object with a string 'name'")
        where = f"suite {path}: case {c['name']!r}"
        if c["name"] in seen:
            raise ValueError(f"{where}: the name is used twice")
        seen.add(c["name"])
        if c.get("op") not in OPS:
            raise ValueError(f"{where}: 'op' must be one of {', '.join(OPS)}, got {c.get('op')!r}")
        for key in _CASE_INTS[c["op"]]:
            v = c.get(key)
            low = 0 if key == "pad" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{where}: {key!r} must be an int >= {low}, got {v!r}")
        if c["op"] == "conv2d" and (c["c"] % c["groups"] or c["k"] % c["groups"]):
            raise ValueError(f"{where}: 'groups' ({c['groups']}) must divide c ({c['c']}) and k "
                             f"({c['k']})")
        if c["op"] != "conv2d" and 2 * c["pad"] > min(c["r"], c["s"]):
            raise ValueError(f"{where}: 'pad' ({c['pad']}) may be at most half the window "
                             f"({c['r']}x{c['s']}), as in torch")
        for key, dim in (("r", "h"), ("s", "w")):
            if c[key] > c[dim] + 2 * c["pad"]:
                raise ValueError(f"{where}: the window {key}={c[key]} is larger than the padded "
                                 f"input ({dim}={c[dim]} + 2*pad)")
    return cases


def group_of(case: dict) -> str:
    """dense/grouped, depthwise (groups == C == K) or pooling."""
    if case["op"] != "conv2d":
        return POOLING
    g = case.get("groups", 1)
    return DEPTHWISE if g > 1 and g == case["c"] == case["k"] else DENSE


def select_cases(cases: Sequence[dict], spec: Optional[str]) -> List[dict]:
    """Cases whose name equals or contains one of the comma-separated words of spec (or whose
    group is named, e.g. 'depthwise', 'pooling', 'dense'); all cases for None/''."""
    if not spec:
        return list(cases)
    words = [w.strip() for w in spec.split(",") if w.strip()]
    picked = [c for c in cases
              if any(w == c["name"] or w in c["name"] or group_of(c).startswith(w) for w in words)]
    if not picked:
        names = ", ".join(c["name"] for c in cases)
        raise ValueError(f"--cases {spec!r} matches no case; the suite has: {names}")
    return picked


# `--ops` words and the groups they select.
OP_WORDS = {"conv": DENSE, "depthwise": DEPTHWISE, "pool": POOLING}


def select_ops(cases: Sequence[dict], ops: Sequence[str]) -> List[dict]:
    """Cases of the groups named by ops words (conv = dense/grouped, depthwise, pool)."""
    bad = [o for o in ops if o not in OP_WORDS]
    if bad:
        raise ValueError(f"--ops: unknown {', '.join(bad)}; choose from {', '.join(OP_WORDS)}")
    groups = {OP_WORDS[o] for o in ops}
    return [c for c in cases if group_of(c) in groups]


def out_len(size: int, k: int, stride: int, pad: int) -> int:
    """Output length for the suite's shapes (symmetric padding, dilation 1, floor mode), from the
    one Python output-size helper."""
    from fastconv._shape import output_size
    return output_size(size, k, stride, pad, pad, 1, False)


def case_dims(case: dict, batch_key: str = "n_cpu") -> dict:
    """N, C, H, W, K, R, S, P, Q, stride, pad, groups of a case at the given batch."""
    N, C, H, W = case[batch_key], case["c"], case["h"], case["w"]
    R, S, st, pad = case["r"], case["s"], case["stride"], case["pad"]
    K = case.get("k", C)
    return dict(N=N, C=C, H=H, W=W, K=K, R=R, S=S, P=out_len(H, R, st, pad), Q=out_len(W, S, st, pad),
                stride=st, pad=pad, groups=case.get("groups", 1))


def conv_flops(d: dict) -> float:
    """FLOPs of one conv direction (forward, input- or weight-gradient alike):
    2 * N * K * P * Q * (C / groups) * R * S."""
    return 2.0 * d["N"] * d["K"] * d["P"] * d["Q"] * (d["C"] // d["groups"]) * d["R"] * d["S"]


def pool_bytes(d: dict, op: str, direction: str, itemsize: int = 4) -> float:
    """Bytes read + written by pooling: forward reads x and writes y; forward+backward adds the
    int64 indices (max: written by the forward, read by the backward) and the backward's dy read
    and dx write."""
    x = d["N"] * d["C"] * d["H"] * d["W"]
    y = d["N"] * d["C"] * d["P"] * d["Q"]
    if direction == "fwd":
        return float((x + y) * itemsize)
    idx = 2 * y * 8 if op == "max_pool2d" else 0
    return float((x + y) * itemsize + idx + (y + x) * itemsize)


def conv_bytes(d: dict, itemsize: int = 4) -> float:
    """Bytes of the three tensors each conv direction touches once at least: x, w and y (forward
    reads x and w and writes y; the input gradient reads dy and w and writes dx; the weight
    gradient reads x and dy and writes dw; dx is x-sized, dy y-sized, dw w-sized)."""
    x = d["N"] * d["C"] * d["H"] * d["W"]
    w = d["K"] * (d["C"] // d["groups"]) * d["R"] * d["S"]
    y = d["N"] * d["K"] * d["P"] * d["Q"]
    return float((x + w + y) * itemsize)


def work_of(case: dict, direction: str, batch_key: str = "n_cpu") -> Tuple[float, str]:
    """(amount, unit) of one timed direction: (FLOPs, 'GFLOP/s') or (bytes, 'GB/s')."""
    d = case_dims(case, batch_key)
    if case["op"] == "conv2d":
        return conv_flops(d), "GFLOP/s"
    return pool_bytes(d, case["op"], direction), "GB/s"


def bytes_of(case: dict, direction: str, batch_key: str = "n", itemsize: int = 4) -> float:
    """Least DRAM traffic of one timed direction in bytes (the GPU runner's GB/s): pool_bytes
    for pooling, conv_bytes for convolution."""
    d = case_dims(case, batch_key)
    if case["op"] == "conv2d":
        return conv_bytes(d, itemsize)
    return pool_bytes(d, case["op"], direction, itemsize)


# ---- timing -----------------------------------------------------------------------------------


@dataclasses.dataclass
class TimingConfig:
    warmup: int = 3            # untimed calls per implementation before sampling
    repeat: int = 15           # timed samples per implementation; the median is reported
    min_sample_s: float = 2e-3  # a sample repeats the call until it lasts at least this long
    rotate_bytes: int = 64 << 20  # tiny cases rotate through input sets totalling about this


@dataclasses.dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float
    samples: int
    calls_per_sample: int


def rotation_count(bytes_per_set: int, cfg: TimingConfig, cap: int = 16) -> int:
    """How many distinct input sets a case should cycle through so that consecutive calls do not
    find their inputs in cache: enough to cover cfg.rotate_bytes (at most cap, at least 1)."""
    if bytes_per_set <= 0:
        return 1
    return max(1, min(cap, math.ceil(cfg.rotate_bytes / bytes_per_set)))


def measure(impls: Dict[str, Tuple[Callable, Sequence[tuple]]], cfg: TimingConfig,
            sync: Optional[Callable[[], None]] = None,
            clock: Callable[[], float] = time.perf_counter) -> Dict[str, Timing]:
    """Time several implementations of the same work side by side.

    impls maps a name to (fn, input_sets): each call is fn(*input_sets[i]) with i rotating. Each
    implementation is warmed up, its calls per sample chosen so a sample lasts min_sample_s, then
    the samples are taken round-robin across implementations (one sample of each in turn).
    `sync` (e.g. torch.cuda.synchronize) is called before reading the clock, for asynchronous
    devices; a GPU runner may pass its own clock built on CUDA events instead.
    """
    sync = sync or (lambda: None)
    state = {}
    for name, (fn, sets) in impls.items():
        k = 0
        for _ in range(max(cfg.warmup, 1)):
            fn(*sets[k % len(sets)])
            k += 1
        sync()
        t0 = clock()
        fn(*sets[k % len(sets)])
        k += 1
        sync()
        once = max(clock() - t0, 1e-7)
        inner = max(1, math.ceil(cfg.min_sample_s / once)) if once < cfg.min_sample_s else 1
        state[name] = [fn, sets, k, inner, []]
    for _ in range(max(cfg.repeat, 1)):
        for name, st in state.items():
            fn, sets, k, inner, samples = st
            sync()
            t0 = clock()
            for _ in range(inner):
                fn(*sets[k % len(sets)])
                k += 1
            sync()
            samples.append((clock() - t0) / inner)
            st[2] = k
    return {name: Timing(statistics.median(st[4]), min(st[4]), max(st[4]), len(st[4]), st[3])
            for name, st in state.items()}


# ---- targets ----------------------------------------------------------------------------------

# ratio = fastconv time / baseline time (lower is better); baseline = faster torch layout.
DENSE_GEOMEAN_MAX = {"fwd": 1.3, "bwd_input": 1.5, "bwd_weight": 1.5}
DENSE_CASE_MAX = 2.5
DENSE_3X3_MIN_GFLOPS = 150.0
DEPTHWISE_GEOMEAN_MAX = {"fwd": 1.0, "bwd_input": 1.0, "bwd_weight": 0.3}
POOL_MAX_VS = {"nchw": 0.2, "channels_last": 1.0}


def geomean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not vals:
        return float("nan")
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def _verdict(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def summarize(rows: List[dict], expected_counts: Optional[Dict[str, int]] = None) -> List[dict]:
    """Target checks over the result rows (one row per case and direction, see run_cpu.py):
    a list of dicts {group, metric, value, target, verdict, note}. A group with missing cases
    (filtered out, not implemented, failed check) is evaluated over what it has and says so."""
    out = []

    def add(group, metric, value, target, ok, note=""):
        out.append(dict(group=group, metric=metric, value=value, target=target,
                        verdict=_verdict(ok), note=note))

    def timed(group, direction):
        return [r for r in rows if r["group"] == group and r["direction"] == direction
                and r.get("ratio") is not None]

    def coverage(group, have):
        want = (expected_counts or {}).get(group)
        return f"{have} of {want} cases" if want and have != want else f"{have} cases"

    for direction, limit in DENSE_GEOMEAN_MAX.items():
        rs = timed(DENSE, direction)
        if rs:
            g = geomean([r["ratio"] for r in rs])
            add(DENSE, f"geomean ratio {direction}", g, f"<= {limit}", g <= limit,
                coverage(DENSE, len(rs)))
    rs = [r for d in CONV_DIRS for r in timed(DENSE, d)]
    if rs:
        worst = max(rs, key=lambda r: r["ratio"])
        add(DENSE, "worst case ratio (any direction)", worst["ratio"], f"<= {DENSE_CASE_MAX}",
            worst["ratio"] <= DENSE_CASE_MAX, f"{worst['case']} {worst['direction']}")
    for direction in CONV_DIRS:
        rs = [r for r in timed(DENSE, direction) if r.get("is_3x3_dense")]
        if rs:
            low = min(rs, key=lambda r: r["fastconv_rate"])
            add(DENSE, f"min GFLOP/s on 3x3 dense layers, {direction}", low["fastconv_rate"],
                f">= {DENSE_3X3_MIN_GFLOPS:g}", low["fastconv_rate"] >= DENSE_3X3_MIN_GFLOPS,
                low["case"])
    for direction, limit in DEPTHWISE_GEOMEAN_MAX.items():
        rs = timed(DEPTHWISE, direction)
        if rs:
            g = geomean([r["ratio"] for r in rs])
            add(DEPTHWISE, f"geomean ratio {direction}", g, f"<= {limit}", g <= limit,
                coverage(DEPTHWISE, len(rs)))
    for layout, limit in POOL_MAX_VS.items():
        key = f"ratio_{layout}"
        for direction in POOL_DIRS:
            rs = [r for r in timed(POOLING, direction) if r.get(key) is not None]
            if rs:
                worst = max(rs, key=lambda r: r[key])
                add(POOLING, f"max ratio vs {layout}, {direction} (per case)", worst[key],
                    f"<= {limit}", worst[key] <= limit,
                    f"worst {worst['case']}; geomean {geomean([r[key] for r in rs]):.3g}")
    return out


# ---- device and reports -----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> Optional[float]:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy(load: Optional[float], threshold: float = 0.5) -> bool:
    """Whether other processes were running before a benchmark started (its timings then mean
    little: on a small machine the kernels' threads get descheduled)."""
    return load is not None and load > threshold


def fmt(v, digits: int = 3) -> str:
    """A number for a table: '' for None, 'nan' for NaN, else `digits` significant figures."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return "nan"
    if isinstance(v, int):
        return str(v)
    if abs(v) >= 10 ** digits:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: str, rows: List[dict], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})


def result_paths(out: str, stem: str) -> Tuple[str, str]:
    """(markdown, csv) paths: `out` is a directory (created if needed; files <stem>-<time>.md/.csv)
    or a path ending in .md or .csv (its sibling gets the other suffix)."""
    if out.endswith((".md", ".csv")):
        base = out.rsplit(".", 1)[0]
        os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
        return base + ".md", base + ".csv"
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    return base + ".md", base + ".csv"
