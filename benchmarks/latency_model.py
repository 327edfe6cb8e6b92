"""How right is the per-device latency model? Predicted against measured latency, on the same machine (issue 13 §2).

Units (each a model in one memory format, deploy form, batch 1, LR 180x320 unless a spec has no x4):

* every shipped spec at x4 (``spec:NAME/FORMAT``);
* ``--candidates`` samples (default 60, half from ``search/hybrid_x4.yaml`` and half from
  ``search/safmn_width_depth.yaml``), both memory formats (``cand:SAMPLE/FORMAT``).

Steps, all resumable (every finished unit is appended to the JSONL store; a rerun skips what is there):

1. calibration: a table for this device (``--table``, default ``runs/latency_model/<device>.json``) built on
   calibration models that are *not* evaluated (the two templates' seeds and ``--calibration`` extra samples per
   template, another random stream), plus the block calls of ``--cover`` further samples per template (as
   ``srblocks latency calibrate --search T --cover N``); its time is recorded;
2. evaluation: for each unit, the prediction (block calls the table lacks are measured then, as the search would),
   and the whole model measured for real, interleaved in chunks of 4 models (same robust medians as the table);
3. throughput: candidates/s of the search's budget check (``evaluate_candidate`` with params and latency budgets at
   the SAFMN seed's predicted latency) on fresh samples of each template, with a warm table.

    python benchmarks/latency_model.py run [--threads 2] [--candidates 60] [--specs safmn fmen_s] [--quick]
    python benchmarks/latency_model.py run --device cuda --label gpu     # the same on a GPU
    python benchmarks/latency_model.py report

``report`` prints, per memory format and overall: the fraction of units within +-10 % and +-20 %, the median
absolute relative error, Kendall's tau between predicted and measured rankings, the calibration time and the
candidates/s. Records carry ``label`` (``--label``; use ``smoke`` for runs on a loaded machine: ``report`` shows
each label separately, and a smoke label is never the headline).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import srblocks  # noqa: E402
from srblocks.latency import (MeasureSettings, TorchRunner, calibrate, predict_latency)  # noqa: E402
from srblocks.latency.calibration import cover_blocks, measure_models  # noqa: E402
from srblocks.latency.measure import QUICK  # noqa: E402
from srblocks.latency.sampling import template_candidates  # noqa: E402
from srblocks.latency.table import open_table  # noqa: E402
from srblocks.search.space import load_search_space  # noqa: E402

DEFAULT_STORE = REPO / "benchmarks" / "results" / "latency_model.jsonl"
TEMPLATES = ("search/hybrid_x4.yaml", "search/safmn_width_depth.yaml")
FORMATS = ("contiguous", "channels_last")
LR_SIZE = (180, 320)


def _deployed(model: torch.nn.Module) -> torch.nn.Module:
    return srblocks.deploy(model) if any(hasattr(m, "reparameterize") for m in model.modules()) else model.eval()


def _read(store: Path) -> list[dict[str, Any]]:
    if not store.is_file():
        return []
    out = []
    for line in store.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill: ignored (the unit runs again)
            continue
    return out


def _append(store: Path, record: dict[str, Any]) -> None:
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _spec_units(names: Iterable[str]) -> list[tuple[str, Any, tuple[int, int]]]:
    units = []
    for name in names:
        variables = srblocks.load_spec(name).spec.variables
        overrides = {"scale": 4} if "scale" in variables else {}
        for fmt in FORMATS:
            units.append((f"spec:{name}/{fmt}", (name, overrides, fmt), LR_SIZE))
    return units


def _candidate_units(count: int, seed: int) -> list[tuple[str, Any, tuple[int, int]]]:
    units = []
    for i, template in enumerate(TEMPLATES):
        space = load_search_space(REPO / template)
        n = count // len(TEMPLATES) + (1 if i < count % len(TEMPLATES) else 0)
        for name, spec in template_candidates(space, n, seed, with_seeds=False):
            for fmt in FORMATS:
                units.append((f"cand:{name}/{fmt}", (spec, {}, fmt), tuple(space.settings.lr_size)))
    return units


def _cover(count: int, seed: int) -> Iterable[tuple[str, torch.nn.Module]]:
    """``count`` more samples per template in both formats, built lazily: their block calls are calibrated (as
    ``srblocks latency calibrate --search T --cover N`` does), not the models."""
    for template in TEMPLATES:
        space = load_search_space(REPO / template)
        for name, spec in template_candidates(space, count, seed, with_seeds=False):
            for fmt in FORMATS:
                yield f"{name}/{fmt}", _build((spec, {}, fmt))


def _build(what: Any) -> torch.nn.Module:
    source, overrides, fmt = what
    return _deployed(srblocks.build_model(source, memory_format=fmt, **overrides))


def run(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    runner = TorchRunner(args.device, args.threads if args.device == "cpu" else None)
    key = runner.key()
    store = Path(args.out)
    table_path = Path(args.table) if args.table else REPO / "runs" / "latency_model" / f"{key.slug()}.json"
    done = {r["id"] for r in _read(store) if r.get("device") == key.as_dict() and r.get("label") == args.label}
    settings = QUICK if args.quick else MeasureSettings()
    table, table_path = open_table(table_path, key)
    base = {"device": key.as_dict(), "label": args.label, "table": str(table_path)}
    print(f"{key.describe()}; table {table_path}; store {store} (label {args.label!r})", flush=True)

    if "calibration" not in done:
        models = []
        for template in TEMPLATES:
            space = load_search_space(REPO / template)
            for name, spec in template_candidates(space, args.calibration, seed=args.seed + 1000):
                for fmt in FORMATS:
                    models.append((f"{name}/{fmt}", _build((spec, {}, fmt))))
        print(f"calibrating on {len(models)} models (not evaluated below)", flush=True)
        show = lambda s, d, t, text: print(f"  [{s} {d}/{t or '?'}] {text}", flush=True)  # noqa: E731
        report = calibrate(table, models, (1, 3, *LR_SIZE), runner, settings, progress=show)
        table.save(table_path)
        del models
        t0 = time.perf_counter()
        covered = cover_blocks(table, _cover(args.cover, args.seed + 7919), (1, 3, *LR_SIZE), runner, settings,
                               progress=show)
        table.save(table_path)
        _append(store, {**base, "id": "calibration", "kind": "calibration",
                        "seconds": report.seconds + time.perf_counter() - t0, "blocks": len(table.blocks),
                        "covered_blocks": covered, "models": report.models, "cover": args.cover})

    specs = args.specs if args.specs is not None else srblocks.shipped_spec_names()
    units = [u for u in _spec_units(specs) + _candidate_units(args.candidates, args.seed) if u[0] not in done]
    print(f"{len(units)} units to evaluate", flush=True)
    for start in range(0, len(units), 4):
        group = units[start:start + 4]
        by_size: dict[tuple[int, int], list] = {}
        for unit in group:
            by_size.setdefault(unit[2], []).append(unit)
        for size, same in by_size.items():
            models, predictions, predict_s = [], {}, {}
            for uid, what, _ in same:
                model = _build(what)
                t0 = time.perf_counter()
                predictions[uid] = predict_latency(model, table, (1, 3, *size), runner=runner, settings=settings)
                predict_s[uid] = time.perf_counter() - t0
                models.append((uid, model))
            table.save(table_path)
            measured = measure_models(models, (1, 3, *size), runner, settings)
            for uid, _ in models:
                p = predictions[uid]
                record = {**base, "id": uid, "kind": uid.split(":", 1)[0], "memory_format": p.memory_format,
                          "predicted_ms": p.ms, "measured_ms": measured[uid], "blocks_ms": p.blocks_ms,
                          "band": p.band, "nodes": p.nodes, "blocks_measured_now": p.measured_now,
                          "predict_s": predict_s[uid], "lr_size": list(size)}
                _append(store, record)
                err = (p.ms - measured[uid]) / measured[uid] * 100
                print(f"  {uid:<48} predicted {p.ms:9.2f} ms  measured {measured[uid]:9.2f} ms  {err:+6.1f} %",
                      flush=True)

    for template in TEMPLATES:
        uid = f"throughput:{Path(template).stem}"
        if uid in done or args.throughput <= 0:
            continue
        _append(store, {**base, "id": uid, "kind": "throughput", **_throughput(template, runner, table_path,
                                                                              args.throughput, args.seed + 2000,
                                                                              settings)})
    report_store(store)


def _throughput(template: str, runner: TorchRunner, table_path: Path, count: int, seed: int,
                settings: MeasureSettings) -> dict[str, Any]:
    """Candidates/s of the search's budget check with a latency budget (the SAFMN seed's predicted latency)."""
    from srblocks.latency import BudgetLatency
    from srblocks.search import evaluate_candidate, parse_budgets

    space = load_search_space(REPO / template)
    estimator = BudgetLatency(runner, table_path, settings=settings)
    seed_spec = dict(template_candidates(space, 0))[f"{space.file.name}_safmn"]
    limit = predict_latency(_build((seed_spec, {}, "contiguous")), estimator.table, (1, 3, *space.settings.lr_size),
                            runner=runner, settings=settings).ms
    budgets = parse_budgets({"params": space.settings.budgets.get("params", "250K"), "latency": limit})
    specs = [spec for _, spec in template_candidates(space, count, seed, with_seeds=False)]
    t0 = time.perf_counter()
    for spec in specs:
        try:
            evaluate_candidate(spec, budgets, lr_size=tuple(space.settings.lr_size), threads=runner.threads or 1,
                               latency_runs=3, need_latency=False, latency=estimator)
        except Exception as exc:  # noqa: BLE001 - an invalid candidate counts as checked
            print(f"  {type(exc).__name__}: {exc}", flush=True)
    seconds = time.perf_counter() - t0
    print(f"  throughput {template}: {count / seconds:.2f} candidates/s ({estimator.measured} measured near the "
          f"budget of {limit:.1f} ms)", flush=True)
    return {"template": template, "candidates": count, "seconds": seconds, "budget_ms": limit,
            "measured_near_boundary": estimator.measured}


def kendall_tau(xs: list[float], ys: list[float]) -> float:
    """Kendall's tau-b of two equally long sequences (ties counted as neither concordant nor discordant)."""
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            dx, dy = xs[i] - xs[j], ys[i] - ys[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)) ** 0.5
    return (concordant - discordant) / denominator if denominator else float("nan")


def _stats(rows: list[dict[str, Any]]) -> str:
    errors = [abs(r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"] for r in rows]
    tau = kendall_tau([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])
    return (f"{len(rows):>4} | {sum(e <= 0.10 for e in errors) / len(rows) * 100:5.1f} % | "
            f"{sum(e <= 0.20 for e in errors) / len(rows) * 100:5.1f} % | {statistics.median(errors) * 100:5.1f} % | "
            f"{tau:+.3f}")


def report_store(store: Path) -> None:
    records = _read(store)
    labels = sorted({r.get("label", "") for r in records})
    if not records:
        print(f"no records in {store}")
        return
    for label in labels:
        mine = [r for r in records if r.get("label", "") == label]
        devices = {json.dumps(r["device"], sort_keys=True) for r in mine}
        for device in sorted(devices):
            rows = [r for r in mine if json.dumps(r["device"], sort_keys=True) == device]
            d = json.loads(device)
            print(f"\nlabel {label!r}" + ("  (SMOKE: loaded machine, not an accuracy result)" if "smoke" in label
                                         else "") + f"; {d['backend']} on {d['device']}, {d['threads']} threads, "
                  f"{d['software']}")
            print("| units | n | within 10 % | within 20 % | median abs error | Kendall tau |")
            print("|---|---|---|---|---|---|")
            units = [r for r in rows if r["kind"] in ("spec", "cand")]
            groups = [("all", units)] + [(f"{k} {f}", [r for r in units if r["kind"] == k and r["memory_format"] == f])
                                         for k in ("spec", "cand") for f in FORMATS]
            for name, group in groups:
                if group:
                    print(f"| {name} | {_stats(group)} |")
            for r in rows:
                if r["kind"] == "calibration":
                    print(f"calibration: {r['seconds']:.1f} s ({r['blocks']} block entries, {r['models']} models, "
                          f"blocks of {r.get('cover', 0)} more samples per template)")
                elif r["kind"] == "throughput":
                    print(f"throughput {r['template']}: {r['candidates'] / r['seconds']:.2f} candidates/s with a "
                          f"latency budget of {r['budget_ms']:.1f} ms ({r['measured_near_boundary']} of "
                          f"{r['candidates']} measured near it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="calibrate, evaluate and time (resumes)")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--device", default="cpu", help="cpu or cuda (a GPU: one table per GPU name and torch/CUDA "
                   "version; --threads is ignored)")
    r.add_argument("--candidates", type=int, default=60, help="sampled candidates (each in both memory formats)")
    r.add_argument("--calibration", type=int, default=6, help="extra calibration samples per template")
    r.add_argument("--cover", type=int, default=100,
                   help="samples per template whose block calls are calibrated (not the models)")
    r.add_argument("--throughput", type=int, default=40, help="candidates per template for candidates/s (0: skip)")
    r.add_argument("--specs", nargs="*", default=None, help="shipped specs to evaluate (default: all)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--quick", action="store_true", help="fewer timing samples (smoke tests)")
    r.add_argument("--label", default="quiet", help="label of the records (use 'smoke' on a loaded machine)")
    r.add_argument("--table", default=None, help="latency table file (default runs/latency_model/<device>.json)")
    r.add_argument("--out", default=str(DEFAULT_STORE), help="JSONL store")
    p = sub.add_parser("report", help="print the accuracy table from the store")
    p.add_argument("--out", default=str(DEFAULT_STORE))
    args = parser.parse_args()
    if args.action == "run":
        run(args)
    else:
        report_store(Path(args.out))


if __name__ == "__main__":
    main()
