"""`fastconv bench`: fastconv's kernels against PyTorch on the layer suite, side by side.

Every case is checked against PyTorch first (float64 reference; a wrong result is reported
loudly, is not timed, and makes the exit status 1), then fastconv and PyTorch are timed in the
same process: on the CPU against the faster of torch NCHW and channels_last with the same thread
count; on a GPU against cuDNN (cudnn.benchmark=True, CUDA events, L2 flushed between runs). Prints
a markdown table (time, ratio, GFLOP/s or GB/s, % of the ceilings measured in the same run);
--csv/--json write every row with the machine facts, --plot draws the ratios per layer.

    fastconv bench --quick                                  # CPU, whole suite, rough numbers
    fastconv bench --ops depthwise,pool --threads 1,2 --plot ratios.png
    fastconv bench --device cuda --json gpu.json            # float32 and bfloat16

Without a GPU, --device cuda prints what each layer has to beat (pooling and depthwise: its bytes
at 85% of an H100's bandwidth; dense conv: its FLOPs at 70% of the H100's tensor-core peak; and
cuDNN's times on an H200) and exits 0. On a GPU, dense conv rows also show TFLOP/s and % of the
H100 peak (TF32 for float32, BF16/FP16 otherwise).
"""
from __future__ import annotations

import argparse
import sys
import time

from fastconv.bench import harness
from fastconv.commands import CLIError
from fastconv.commands._args import int_at_least, word_list

DTYPES = ("float32", "float16", "bfloat16")


def _thread_list(text: str):
    try:
        vals = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected a positive int or a comma-separated list of "
                                         f"them (e.g. 1,2,4), got {text!r}")
    return list(dict.fromkeys(vals))


def add_arguments(s) -> None:
    s.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where fastconv and PyTorch run (default: cpu)")
    s.add_argument("--ops", type=word_list(tuple(harness.OP_WORDS)), metavar="LIST",
                   help="op groups to run: conv (dense and grouped), depthwise, pool (default: "
                   "all three)")
    s.add_argument("--cases", metavar="NAMES", help="also filter by case names or substrings, "
                   "comma-separated (default: every case of the selected groups)")
    s.add_argument("--suite", metavar="FILE", default=harness.SUITE,
                   help="suite JSON, as the one shipped with fastconv (default: "
                   "fastconv/bench/suite.json: ResNet-50, VGG-16, MobileNetV2, EfficientNet-Lite0 "
                   "layers)")
    s.add_argument("--dtype", type=word_list(DTYPES), metavar="LIST",
                   help="dtypes, comma-separated: float32, float16, bfloat16 (the last two on "
                   "the GPU only; default: float32 on the CPU, float32,bfloat16 with --device "
                   "cuda)")
    s.add_argument("--quick", action="store_true",
                   help="fewer samples per measurement: rough numbers, a few times faster (default: "
                   "off)")
    s.add_argument("--threads", type=_thread_list, metavar="N[,N...]",
                   help="CPU threads for fastconv and torch alike; a list (1,2,4) runs the suite "
                   "once per count and adds a scaling table (default: fastconv.num_threads())")
    s.add_argument("--repeat", type=int_at_least(1), help="timed samples per implementation "
                   "(default: CPU 15, GPU 50; with --quick 5 and 15)")
    s.add_argument("--warmup", type=int_at_least(0), help="untimed calls before sampling (default "
                   "3; with --quick 1)")
    s.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the random inputs (default: 0)")
    s.add_argument("--csv", metavar="FILE", help="write every row, with the machine facts, as "
                   "CSV (default: not written)")
    s.add_argument("--json", metavar="FILE", help="write the machine facts, settings, ceilings "
                   "and rows as JSON (default: not written)")
    s.add_argument("--from-json", nargs="+", metavar="FILE.json", dest="from_json",
                   help="time nothing: print the report of earlier --json runs (several CPU runs, "
                        "one per thread count, merge into one report with the thread-scaling "
                        "table); --csv/--json/--plot write the merged rows (default: run "
                        "the benchmark)")
    s.add_argument("--plot", metavar="FILE.png", help="draw the ratios per layer as a bar chart "
                   "(needs matplotlib; default: not drawn)")


def _select(args):
    """(the whole suite, the selected cases)."""
    try:
        suite = harness.load_suite(args.suite)
        if args.ops:
            ops = args.ops
        elif args.device == "cuda":
            from fastconv.bench import cuda
            ops = cuda.default_ops()
        else:
            ops = list(harness.OP_WORDS)
        cases = harness.select_ops(suite, ops)
        if not cases:
            raise ValueError(f"--ops {','.join(ops)}: the suite {args.suite} has no such case")
        if args.cases:
            cases = harness.select_cases(cases, args.cases)
    except ValueError as e:
        raise CLIError(str(e)) from None
    return suite, cases


def _progress(total: int):
    """(on_row callback, close) printing one line per finished row under a tqdm bar (no bar when
    stderr is not a terminal or tqdm is missing)."""
    from fastconv.bench import cpu
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    bar = tqdm(total=total, desc="bench", unit="run", file=sys.stderr, disable=None,
               leave=False) if tqdm else None

    def on_row(row):
        line = cpu.row_line(row) + (f" {row['dtype']}" if row.get("dtype") != "float32" else "")
        if bar is not None and not bar.disable:
            bar.write(line, file=sys.stderr)
            bar.set_postfix_str(f"{row['case']} {row['direction']}", refresh=False)
            bar.update(1)
        else:
            print(line, file=sys.stderr, flush=True)

    return on_row, (bar.close if bar is not None else (lambda: None))


def _config(args, gpu: bool) -> harness.TimingConfig:
    return harness.TimingConfig(
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 3),
        repeat=args.repeat or ((15 if args.quick else 50) if gpu else (5 if args.quick else 15)),
        min_sample_s=(1e-3 if args.quick else 2e-3))


def _settings(args, cfg, threads) -> dict:
    return dict(ops=args.ops, cases=args.cases, suite=args.suite, dtypes=args.dtype,
                quick=args.quick, threads=threads, repeat=cfg.repeat, warmup=cfg.warmup,
                min_sample_ms=cfg.min_sample_s * 1e3, seed=args.seed)


def _write(args, rows, meta, summary=()) -> None:
    from fastconv.bench import report
    try:
        if args.csv:
            report.write_csv(args.csv, rows)
            print(f"wrote {args.csv}", file=sys.stderr)
        if args.json:
            report.write_json(args.json, rows, meta, summary)
            print(f"wrote {args.json}", file=sys.stderr)
        if args.plot:
            if report.plot(args.plot, rows, meta):
                print(f"wrote {args.plot}", file=sys.stderr)
            else:
                print(f"--plot: no ratios to draw (fastconv was not timed); {args.plot} not "
                      "written", file=sys.stderr)
    except OSError as e:
        raise CLIError(f"cannot write {e.filename}: {e.strerror}") from None


def _failed(rows) -> bool:
    return any(r["status"] == "CHECK FAILED" or r["status"].startswith("error") for r in rows)


def run_cpu(args, suite, cases) -> int:
    import fastconv
    from fastconv.bench import cpu, machine, report
    if args.dtype != ["float32"]:
        raise CLIError("--dtype: the CPU kernels are float32 only; float16 and bfloat16 run "
                       "with --device cuda")
    if args.plot:
        _need_matplotlib()
    try:
        torch = cpu.import_torch()
    except ImportError as e:
        raise CLIError(str(e)) from None
    thread_counts = args.threads or [fastconv.num_threads()]
    cfg = _config(args, gpu=False)
    facts = machine.cpu_facts(thread_counts[0])
    meta = dict(device="cpu", machine=facts, settings=_settings(args, cfg, thread_counts),
                ceilings={}, load_start=harness.load_average())
    print(f"fastconv {facts['fastconv_version']} ({facts['isa']}) vs torch "
          f"{facts['torch_version']} on {facts['cpu']}: {len(cases)} cases, threads "
          f"{','.join(map(str, thread_counts))}", file=sys.stderr)
    if harness.busy(meta["load_start"]):
        print(f"WARNING: load average {meta['load_start']:.2f} before starting: other processes "
              "are using the CPU, the timings will be unreliable", file=sys.stderr)
    expected = {g: sum(harness.group_of(c) == g for c in suite) for g in harness.GROUPS}
    total = sum(len(cpu.directions(c)) for c in cases) * len(thread_counts)
    on_row, close = _progress(total)
    rows, summaries = [], {}
    t0 = time.perf_counter()
    try:
        for t in thread_counts:
            fastconv.set_num_threads(t)
            torch.set_num_threads(t)
            ceil = machine.cpu_ceilings(torch, quick=args.quick)
            meta["ceilings"][t] = ceil
            part = cpu.run(cases, cfg, t, args.seed, on_row=on_row, facts=dict(facts, threads=t))
            for r in part:
                peak = ceil.get(r["unit"])
                for name in ("fastconv", "baseline"):
                    rate = r.get(f"{name}_rate")
                    r[f"{name}_pct_peak"] = 100.0 * rate / peak if rate and peak else None
                r["device"] = "cpu"
            summaries[t] = harness.summarize(part, expected)
            rows += part
    finally:
        close()
    meta["elapsed_s"] = time.perf_counter() - t0
    print(report.render(rows, meta, summaries))
    _write(args, rows, meta, [dict(s, threads=t) for t, ss in summaries.items() for s in ss])
    if _failed(rows):
        print("fastconv bench: FAILED: a result was wrong or a kernel raised (see CHECK FAILED / "
              "error above); those rows were not timed for fastconv", file=sys.stderr)
        return 1
    return 0


def run_cuda(args, suite, cases) -> int:
    from fastconv.bench import cuda, machine, report
    if args.plot:
        _need_matplotlib()
    if args.threads:
        raise CLIError("--threads sets the CPU threads; it has no effect with --device cuda")
    reason = cuda.gpu_unavailable_reason()
    cfg = _config(args, gpu=True)
    if reason is not None:
        facts = machine.cpu_facts(None)
        meta = dict(device="cuda", machine=facts, settings=_settings(args, cfg, None),
                    no_gpu_reason=reason)
        rows = cuda.projection(cases, args.dtype)
        for r in rows:
            r["device"] = "cuda"
        print(f"fastconv bench --device cuda: no GPU ({reason}); printing the targets instead",
              file=sys.stderr)
        print(report.render(rows, meta))
        _write(args, rows, meta)
        return 0
    import torch
    facts = dict(machine.cpu_facts(None), **machine.gpu_facts(torch))
    copy_gbps = machine.gpu_copy_gbps(torch)
    timer_flush = max(2 * (facts.get("gpu_l2_bytes") or 0), cuda.MIN_FLUSH_BYTES)
    meta = dict(device="cuda", machine=facts, settings=_settings(args, cfg, None),
                copy_gbps=copy_gbps, flush_mib=timer_flush / 2**20)
    print(f"fastconv vs torch {facts['torch_version']} (cuDNN {facts['cudnn_version']}) on "
          f"{facts['gpu']}: {len(cases)} cases x {len(args.dtype)} dtypes; copy bandwidth "
          f"{copy_gbps:.0f} GB/s", file=sys.stderr)
    total = sum(len(cuda.directions(c)) for c in cases) * len(args.dtype)
    on_row, close = _progress(total)
    t0 = time.perf_counter()
    try:
        rows = cuda.run(cases, args.dtype, cfg, args.seed, on_row=on_row, facts=facts,
                        copy_gbps=copy_gbps)
    finally:
        close()
    for r in rows:
        r["device"] = "cuda"
    meta["elapsed_s"] = time.perf_counter() - t0
    print(report.render(rows, meta))
    _write(args, rows, meta)
    if _failed(rows):
        print("fastconv bench: FAILED: a result was wrong or a kernel raised (see CHECK FAILED / "
              "error above); those rows were not timed for fastconv", file=sys.stderr)
        return 1
    return 0


def _need_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError("--plot needs matplotlib, which is not installed: pip install "
                       "\"fastconv[bench]\" (or: pip install matplotlib)") from None


def run_from_json(args) -> int:
    """The report of saved --json runs: rows and summaries merged in the order given (a later
    file's row for the same case, direction, dtype and thread count replaces an earlier one),
    the machine facts and settings of the first file, the ceilings of all."""
    import json
    from fastconv.bench import report
    if args.plot:
        _need_matplotlib()
    merged, meta, summaries = {}, None, {}
    for path in args.from_json:
        try:
            with open(path) as f:
                data = json.load(f)
            rows, this = data["rows"], data["meta"]
        except OSError as e:
            raise CLIError(f"--from-json: cannot read {path}: {e.strerror}") from None
        except (ValueError, KeyError, TypeError):
            raise CLIError(f"--from-json: {path} is not a fastconv bench --json file (expected "
                           "an object with 'meta' and 'rows')") from None
        ceilings = {int(t) if str(t).isdigit() else t: c  # JSON made the thread keys strings
                    for t, c in (this.get("ceilings") or {}).items()}
        if meta is None:
            meta = dict(this, ceilings=ceilings)
        elif this.get("device") != meta.get("device"):
            raise CLIError(f"--from-json: {path} is a {this.get('device')} run but "
                           f"{args.from_json[0]} is a {meta.get('device')} run")
        else:
            meta["ceilings"].update(ceilings)
        for r in rows:
            r = dict(this.get("machine", {}), **r)
            merged[(r["case"], r["direction"], r.get("dtype"), r.get("threads"))] = r
        for sm in data.get("summary") or []:
            summaries.setdefault(sm.get("threads"), []).append(sm)
    rows = list(merged.values())
    threads = sorted({r["threads"] for r in rows if r.get("threads") is not None})
    meta["settings"] = dict(meta.get("settings") or {}, threads=threads or None)
    print(report.render(rows, meta, summaries or None))
    _write(args, rows, meta, [s for ss in summaries.values() for s in ss])
    return 1 if _failed(rows) else 0


def run(args) -> int:
    if args.from_json:
        return run_from_json(args)
    harness.passive_omp_wait()
    if args.dtype is None:  # issue 12's GPU targets are float32 (TF32) and bfloat16
        args.dtype = ["float32", "bfloat16"] if args.device == "cuda" else ["float32"]
    suite, cases = _select(args)
    return run_cuda(args, suite, cases) if args.device == "cuda" else run_cpu(args, suite, cases)
