"""How well do the search's proxies rank x4 architectures the way the reference protocol does?

For every architecture (the paper models under 250K deploy params and 15 stratified samples of
``search/hybrid_x4.yaml``, see ``_arch_sets.py``) this measures:

* the reference: ``ref_x4`` validation PSNR (seed 0), and for seven of them ``ref_x4_long`` (3x longer) to check
  that the reference ranking itself is stable;
* every proxy the search offers: params and MACs (deploy form, 180x320 LR), ``grad_norm`` and ``synflow`` at
  initialisation (the search's random 16x16 batch), and PSNR after short training on the protocol's training
  split, validated on its held-out split: 50 / 100 / 200 / 500 iterations of batch 8, 32 px patches (the
  search's settings), plus the current default objective as it runs today (200 iterations on the embedded
  default images, validated on their held-out rows). The short runs validate every 50 iterations, so their
  curves also show what a multi-fidelity search (successive halving on iterations) would see at each rung.

Every finished unit is appended to ``benchmarks/results/search_fidelity.jsonl`` (a results store keyed by spec
hash, protocol/proxy hash and seed); a rerun skips what is done, and an interrupted training resumes from its
checkpoint under ``--work-dir``. Several processes may share the work: each claims a unit before running it.

    python benchmarks/search_fidelity.py run --workers 2          # resumable; Ctrl-C / kill any time
    python benchmarks/search_fidelity.py report                   # tables + scatter PNG from whatever is done

The report prints Kendall tau and Spearman rho of each proxy against the reference validation PSNR, each with a
bootstrap 90 % interval (resampling architectures), the stability tau of ref_x4 vs ref_x4_long, and writes
``benchmarks/results/search_fidelity.md`` and ``docs/search_fidelity.png``. Test sets are never used here.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _arch_sets import PAPER_MODELS, REPO, Arch, spec_hash, stratified_hybrids  # noqa: E402
from _units import run_units  # noqa: E402
from srblocks.build import build_model  # noqa: E402
from srblocks.fileio import write_text_atomic  # noqa: E402
from srblocks.protocols import ResultsStore, deploy_cost, load_protocol, run_protocol  # noqa: E402
from srblocks.protocols.protocol import Protocol, ProtocolTraining  # noqa: E402
from srblocks.search.proxies import grad_norm, synflow  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "search_fidelity.jsonl"
ARCH_CACHE = REPO / "benchmarks" / "results" / "search_fidelity_archs.json"
REPORT = REPO / "benchmarks" / "results" / "search_fidelity.md"
FIGURE = REPO / "docs" / "search_fidelity.png"
SHORT_BUDGETS = (50, 100, 200, 500)
#: architectures (by label) that also get the 3x longer reference run
#: (hpun_s is left out: its ref_x4 run alone took 42 min on one thread, so 3x longer would cost ~2 h of one core)
LONG_LABELS = ("safmn", "fsrcnn", "rfdn_nf36", "safmn_n4", "safmn_dim24", "hybrid_fmm+erb_0", "hybrid_rfdb+fmm_0")
FIRST_WAVE = 12


def short_protocol(iterations: int) -> Protocol:
    """The search's proxy training (batch 8, 32 px patches, lr 1e-3 cosine to 1e-5, EMA 0.999, no warm-up) for
    ``iterations`` iterations, on ref_x4's data split."""
    ref = load_protocol("ref_x4")
    return Protocol(name=f"proxy_short{iterations}", version=1, scale=4, data=ref.data, seeds=[0],
                    training=ProtocolTraining(iterations=iterations, batch_size=8, lr_patch_size=32, lr=1e-3,
                                              min_lr=1e-5, warmup_iterations=0, ema_decay=0.999))


def architectures() -> list[Arch]:
    return PAPER_MODELS + stratified_hybrids(ARCH_CACHE)


# --------------------------------------------------------------------------------------------------------------
# units of work
# --------------------------------------------------------------------------------------------------------------


def zero_cost_unit(arch: Arch, store: ResultsStore, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = build_model(arch.spec, **{"scale": 4, **arch.overrides})
    key = {"kind": "zero_cost", "spec_hash": spec_hash(arch), "seed": seed, "version": 1}
    if store.has(key):
        return
    cost = deploy_cost(model)
    generator = torch.Generator().manual_seed(seed)  # the search's proxy batch (srblocks.search.runner)
    lr = torch.rand(2, 3, 16, 16, generator=generator)
    hr = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    t0 = time.perf_counter()
    record = {"label": arch.label, "params": cost["params"], "macs": cost["macs"],
              "grad_norm": grad_norm(model, lr, hr), "synflow": synflow(model, lr, hr)}
    record["seconds"] = round(time.perf_counter() - t0, 2)
    store.append(key, record)


def embedded_unit(arch: Arch, store: ResultsStore, seed: int = 0) -> None:
    """The default objective exactly as ``srblocks search`` runs it without --data (hybrid_x4's settings)."""
    from srblocks.search.runner import _training_data
    from srblocks.search.space import load_search_space
    from srblocks.train import train

    space = load_search_space(REPO / "search" / "hybrid_x4.yaml")
    s = space.settings
    key = {"kind": "embedded_default", "spec_hash": spec_hash(arch), "seed": seed, "iterations": s.train_iters,
           "batch": s.train_batch_size, "patch": s.train_patch_size, "version": 1}
    if store.has(key):
        return
    torch.manual_seed(seed)
    model = build_model(arch.spec, **{"scale": 4, **arch.overrides})
    train_data, val_data = _training_data(space, None)
    result = train(model, train_data, val_data=val_data, iterations=s.train_iters, batch_size=s.train_batch_size,
                   lr_patch_size=s.train_patch_size, lr=s.train_lr, val_every=s.validate_every, seed=seed,
                   progress=False)
    store.append(key, {"label": arch.label, "val_psnr": result.final_psnr, "wall_s": round(result.elapsed, 1)})


def protocol_unit(arch: Arch, store: ResultsStore, protocol: Protocol | str, work_dir: Path, seed: int = 0,
                  tests: dict | None = None, val_every: int | None = None) -> None:
    run_protocol(arch.spec, protocol, seed=seed, store=store, work_dir=work_dir, overrides=arch.overrides,
                 label=arch.label, tests=tests, progress=False, val_every=val_every,
                 extra={"benchmark": "search_fidelity", "group": arch.group})


def units(archs: list[Arch], store: ResultsStore, work_dir: Path) -> list[tuple[str, Callable[[], None]]]:
    """Every unit in the order they are worth doing: zero-cost for all; reference and proxies for a first wave
    (paper models and hybrids mixed); the stability runs; then the rest."""
    paper = [a for a in archs if a.group == "paper"]
    hybrid = [a for a in archs if a.group == "hybrid"]
    mixed: list[Arch] = []
    for i in range(max(len(paper), len(hybrid))):
        mixed += paper[i:i + 1] + hybrid[i:i + 1]
    out: list[tuple[str, Callable[[], None]]] = []
    for a in mixed:
        out.append((f"zero_cost {a.label}", lambda a=a: zero_cost_unit(a, store)))

    ref_hash = load_protocol("ref_x4").content_hash()
    refs_done = {r["key"].get("spec_hash") for r in store.records(kind="protocol", protocol_hash=ref_hash, seed=0)}

    def proxies(batch: list[Arch], budgets: tuple[int | str, ...]) -> None:
        # cheapest first across the batch, so that every column fills before the costly ones start
        for k in budgets:
            for a in batch:
                if k == "embedded":
                    out.append((f"embedded {a.label}", lambda a=a: embedded_unit(a, store)))
                else:
                    out.append((f"short{k} {a.label}", lambda a=a, k=k: protocol_unit(
                        a, store, short_protocol(k), work_dir, tests={}, val_every=min(k, 50))))

    def wave(batch: list[Arch]) -> None:
        # the proxies of networks whose reference is already stored come first: each of them completes a row of
        # the fidelity table, a new reference alone completes none; the proxies costing <= 1/10 of the
        # reference (the candidates for the default objective) before short500
        with_ref = [a for a in batch if spec_hash(a) in refs_done]
        without = [a for a in batch if spec_hash(a) not in refs_done]
        proxies(with_ref, (50, 100, "embedded", 200))
        proxies(with_ref, (500,))
        for a in without:
            out.append((f"ref_x4 {a.label}", lambda a=a: protocol_unit(a, store, "ref_x4", work_dir)))
        proxies(without, (50, 100, "embedded", 200, 500))

    wave(mixed[:FIRST_WAVE])
    for a in mixed:
        if a.label in LONG_LABELS:
            out.append((f"ref_x4_long {a.label}", lambda a=a: protocol_unit(a, store, "ref_x4_long", work_dir,
                                                                            val_every=500)))
    wave(mixed[FIRST_WAVE:])
    return out


def run(args: argparse.Namespace) -> None:
    store = ResultsStore(args.results)
    work_dir = Path(args.work_dir)
    archs = architectures()
    todo = units(archs, store, work_dir)
    torch.set_num_threads(args.threads)
    print(f"{len(archs)} architectures, {len(todo)} units; results in {store.path}", flush=True)
    run_units(todo, store, work_dir / "claims", args.max_minutes)


# --------------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------------


def rank_stats(x: list[float], y: list[float], n_resamples: int = 2000) -> dict[str, Any]:
    """Kendall tau and Spearman rho of x vs y with bootstrap 90 % percentile intervals (resampling pairs)."""
    from scipy import stats

    x_arr, y_arr = np.asarray(x, float), np.asarray(y, float)
    out: dict[str, Any] = {"n": len(x_arr)}
    for name, fn in (("kendall", stats.kendalltau), ("spearman", stats.spearmanr)):
        value = float(fn(x_arr, y_arr).statistic)
        if len(x_arr) >= 4:
            boot = stats.bootstrap((x_arr, y_arr), lambda a, b: fn(a, b).statistic, paired=True, vectorized=False,
                                   n_resamples=n_resamples, confidence_level=0.9, method="percentile",
                                   random_state=np.random.default_rng(0))
            low, high = (float(v) for v in (boot.confidence_interval.low, boot.confidence_interval.high))
        else:
            low = high = math.nan
        out[name] = (value, low, high)
    return out


def collect(store: ResultsStore, archs: list[Arch]) -> dict[str, dict[str, Any]]:
    """label -> {proxy name: value, 'ref': val PSNR, 'ref_long': ..., 'params': ...} from the store."""
    by_hash = {spec_hash(a): a.label for a in archs}
    ref_hash = load_protocol("ref_x4").content_hash()
    long_hash = load_protocol("ref_x4_long").content_hash()
    short_hashes = {short_protocol(k).content_hash(): f"short{k}" for k in SHORT_BUDGETS}
    table: dict[str, dict[str, Any]] = {label: {"label": label} for label in by_hash.values()}
    for r in store.records():
        key = r["key"]
        label = by_hash.get(key.get("spec_hash"))
        if label is None or key.get("seed") != 0:
            continue
        row = table[label]
        kind = key["kind"]
        if kind == "zero_cost":
            row.update(params=r["params"], macs=r["macs"], grad_norm=r["grad_norm"], synflow=r["synflow"])
        elif kind == "embedded_default":
            row["embedded200"] = r["val_psnr"]
        elif kind == "protocol":
            ph = key["protocol_hash"]
            if ph == ref_hash:
                row["ref"], row["ref_wall_s"], row["ref_threads"] = r["val_psnr"], r["wall_s"], r["machine"]["threads"]
            elif ph == long_hash:
                row["ref_long"] = r["val_psnr"]
            elif ph in short_hashes:
                row[short_hashes[ph]] = r["val_psnr"]
                row[short_hashes[ph] + "_curve"] = {int(i): p for i, p in r["val_curve"]}
    _successive_halving(table, "short500", rungs=(50, 150, 500), keep=1 / 3)
    return table


def _successive_halving(table: dict[str, dict[str, Any]], proxy: str, rungs: tuple[int, ...], keep: float) -> None:
    """Offline successive halving on the validation curves of ``proxy`` runs: at each rung the best ``keep``
    fraction (at least one) goes on; a network's score is (last rung reached, its PSNR there), written as
    ``sha<max>`` = 100 x rung index + PSNR (a ranking key). Average cost per candidate: sum over rungs of the
    fraction that reaches it x the iterations added there."""
    rows = [r for r in table.values() if all(i in r.get(proxy + "_curve", {}) for i in rungs)]
    alive = list(rows)
    for k, rung in enumerate(rungs):
        for r in alive:
            r[f"sha{rungs[-1]}"] = 100 * k + r[proxy + "_curve"][rung]
        if k < len(rungs) - 1:
            alive = sorted(alive, key=lambda r: -r[proxy + "_curve"][rung])[:max(1, math.ceil(len(alive) * keep))]


PROXIES = ("params", "macs", "grad_norm", "synflow", "embedded200", *[f"short{k}" for k in SHORT_BUDGETS], "sha500")
#: cost per candidate relative to one ref_x4 run (16 x 1,000 patch samples); sha500: successive halving with
#: rungs 50 / 150 / 500 keeping a third: 50 + 100/3 + 350/9 = 122 iterations of 8 patches on average
COST = {"params": 0.0, "macs": 0.0, "grad_norm": 0.0, "synflow": 0.0, "embedded200": 200 * 8 / 16000,
        **{f"short{k}": k * 8 / 16000 for k in SHORT_BUDGETS}, "sha500": (50 + 100 / 3 + 350 / 9) * 8 / 16000}


def report(args: argparse.Namespace) -> None:
    store = ResultsStore(args.results)
    archs = architectures()
    table = collect(store, archs)
    rows = [r for r in table.values() if r.get("ref") is not None]
    lines = [f"# Search fidelity (from `{Path(args.results).relative_to(REPO)}`)", "",
             f"{len(rows)} of {len(table)} architectures have a ref_x4 result. Reference: ref_x4 validation PSNR "
             "(seed 0, Y, dB) on the 15 held-out images of T91+BSD200. Intervals: bootstrap 90 % over "
             "architectures.", "",
             "| proxy | cost vs ref_x4 | n | Kendall tau [90 % CI] | Spearman rho [90 % CI] |", "|---|---|---|---|---|"]
    stats_by_proxy: dict[str, dict[str, Any]] = {}
    for proxy in PROXIES:
        pairs = [(r[proxy], r["ref"]) for r in rows if r.get(proxy) is not None and math.isfinite(r[proxy])]
        if len(pairs) < 3:
            lines.append(f"| {proxy} | {COST[proxy]:.3f} | {len(pairs)} | – | – |")
            continue
        s = rank_stats([p[0] for p in pairs], [p[1] for p in pairs])
        stats_by_proxy[proxy] = s
        k, sp = s["kendall"], s["spearman"]
        lines.append(f"| {proxy} | {COST[proxy]:.3f} | {s['n']} | {k[0]:+.2f} [{k[1]:+.2f}, {k[2]:+.2f}] | "
                     f"{sp[0]:+.2f} [{sp[1]:+.2f}, {sp[2]:+.2f}] |")
    stable = [(r["ref"], r["ref_long"]) for r in table.values() if r.get("ref") is not None
              and r.get("ref_long") is not None]
    lines += ["", "## Stability of the reference (ref_x4 vs ref_x4_long, 3x longer)", ""]
    if len(stable) >= 3:
        s = rank_stats([p[0] for p in stable], [p[1] for p in stable])
        k, sp = s["kendall"], s["spearman"]
        lines.append(f"Kendall tau {k[0]:+.2f} [{k[1]:+.2f}, {k[2]:+.2f}], Spearman rho {sp[0]:+.2f} "
                     f"[{sp[1]:+.2f}, {sp[2]:+.2f}] over {len(stable)} architectures.")
        # FSRCNN is 5 dB below every other network: it is ranked last by anything, so it inflates tau
        rest = [(r["ref"], r["ref_long"]) for r in table.values() if r.get("ref") is not None
                and r.get("ref_long") is not None and r["label"] != "fsrcnn"]
        if len(rest) >= 3 and len(rest) < len(stable):
            k = rank_stats([p[0] for p in rest], [p[1] for p in rest])["kendall"]
            lines.append(f"Without FSRCNN (last in every ranking): Kendall tau {k[0]:+.2f} [{k[1]:+.2f}, "
                         f"{k[2]:+.2f}] over {len(rest)} architectures.")
        gains = [p[1] - p[0] for p in stable]
        lines.append(f"ref_x4_long gains {min(gains):+.2f} to {max(gains):+.2f} dB over ref_x4 "
                     f"(median {float(np.median(gains)):+.2f} dB).")
        both = [r for r in table.values() if r.get("ref_long") is not None]
        lines += ["", "Proxies against ref_x4_long on the same architectures (Kendall tau):", "",
                  "| proxy | n | against ref_x4 | against ref_x4_long |", "|---|---|---|---|"]
        for proxy in PROXIES:
            sub = [r for r in both if r.get(proxy) is not None and math.isfinite(r[proxy]) and r.get("ref")]
            if len(sub) < 3:
                continue
            a = rank_stats([r[proxy] for r in sub], [r["ref"] for r in sub], n_resamples=200)["kendall"][0]
            b = rank_stats([r[proxy] for r in sub], [r["ref_long"] for r in sub], n_resamples=200)["kendall"][0]
            lines.append(f"| {proxy} | {len(sub)} | {a:+.2f} | {b:+.2f} |")
    else:
        lines.append(f"{len(stable)} architectures have both runs so far (need 3).")
    lines += ["", "## Per architecture", "",
              "| architecture | params | MACs (G) | ref_x4 val | ref_x4_long val | " + " | ".join(PROXIES[2:]) + " |",
              "|---" * (5 + len(PROXIES) - 2) + "|"]

    def fmt(v: Any, digits: int = 3) -> str:
        if v is None:
            return "–"
        if isinstance(v, float) and (abs(v) >= 1e4 or (abs(v) < 1e-2 and v != 0)):
            return f"{v:.3g}"
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    for r in sorted(table.values(), key=lambda r: -(r.get("ref") or -1)):
        lines.append(f"| {r['label']} | {r.get('params', '–'):,} | {fmt((r.get('macs') or 0) / 1e9, 2)} | "
                     f"{fmt(r.get('ref'))} | {fmt(r.get('ref_long'))} | "
                     + " | ".join(fmt(r.get(p)) for p in PROXIES[2:]) + " |")
    walls = [r["ref_wall_s"] for r in rows if r["label"] == "safmn"]
    if walls:
        lines += ["", f"ref_x4 wall time for SAFMN x4: {walls[0]:.0f} s "
                      f"({[r['ref_threads'] for r in rows if r['label'] == 'safmn'][0]} torch thread(s), shared machine)."]
    text = "\n".join(lines) + "\n"
    print(text)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(REPORT, text)
    _scatter(rows, stats_by_proxy)


def _scatter(rows: list[dict[str, Any]], stats_by_proxy: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [p for p in PROXIES if p in stats_by_proxy]
    if not shown:
        return
    cols = 3
    fig, axes = plt.subplots(math.ceil(len(shown) / cols), cols, figsize=(4 * cols, 3.2 * math.ceil(len(shown) / cols)),
                             squeeze=False)
    units = {"params": "params", "macs": "MACs", "grad_norm": "grad_norm at init", "synflow": "synflow at init",
             "embedded200": "PSNR (dB), 200 it. on embedded images",
             "sha500": "successive halving rank key (100 x rung + PSNR)"}
    for ax, proxy in zip(axes.flat, shown):
        pts = [(r[proxy], r["ref"], r["label"].startswith("hybrid")) for r in rows if r.get(proxy) is not None]
        for hybrid, marker, name in ((False, "*", "paper model"), (True, "o", "hybrid sample")):
            xs = [p[0] for p in pts if p[2] == hybrid]
            ys = [p[1] for p in pts if p[2] == hybrid]
            ax.scatter(xs, ys, marker=marker, s=60 if not hybrid else 25, label=name)
        if proxy in ("params", "macs", "grad_norm", "synflow"):
            ax.set_xscale("log")
        k = stats_by_proxy[proxy]["kendall"]
        ax.set_title(f"{proxy}: tau {k[0]:+.2f} [{k[1]:+.2f}, {k[2]:+.2f}]", fontsize=9)
        ax.set_xlabel(units.get(proxy, f"PSNR (dB) after {proxy[5:]} short iterations"), fontsize=8)
        ax.set_ylabel("ref_x4 val PSNR (dB)", fontsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    tmp = FIGURE.with_name(FIGURE.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, FIGURE)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="do the units not yet in the results store")
    r.add_argument("--workers", type=int, default=1, help="processes sharing the work (1 torch thread each)")
    r.add_argument("--threads", type=int, default=None, help="torch threads per process (default 2 // workers)")
    r.add_argument("--max-minutes", type=float, default=None, help="start no unit after this many minutes")
    r.add_argument("--results", default=str(RESULTS))
    r.add_argument("--work-dir", default=str(REPO / "runs" / "search_fidelity"), help="checkpoints and claims")
    p = sub.add_parser("report", help="tables and the scatter PNG from the results store")
    p.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    if args.command == "report":
        report(args)
        return
    args.threads = args.threads or max(1, 2 // args.workers)
    architectures()  # generate (or read) the cached architecture list once, before workers start
    if args.workers <= 1:
        run(args)
        return
    import subprocess

    argv = [sys.executable, __file__, "run", "--workers", "1", "--threads", str(args.threads), "--results",
            args.results, "--work-dir", args.work_dir] + (["--max-minutes", str(args.max_minutes)] if args.max_minutes else [])
    procs = [subprocess.Popen(argv) for _ in range(args.workers)]
    try:
        for proc in procs:
            proc.wait()
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        raise


if __name__ == "__main__":
    main()
