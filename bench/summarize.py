"""Markdown summary of any result file in bench/results/ (the tables in docs/benchmarks.md come from here).

usage: python bench/summarize.py bench/results/cpu_neurons.json [more.json ...]

Every file starts with the machine it was measured on (ratios depend on it). Recognised: the main job
(`spikeforge bench neurons --json`), the neuron and PSN tables (`--full`, `bench psn`), attention, models,
spike propagation (`bench spikes`), the conv crossover sweep (bench/conv_crossover.py) and training runs
(`spikeforge train --json`). In every ratio column "x NAME" is NAME's time over spikeforge's: > 1 means
spikeforge is faster. Exit status 1 for a file that is not one of these (with a one-line reason).
"""

from __future__ import annotations

import json
import sys


def _f(v, spec=".2f", none="n/a"):
    return none if v is None else format(v, spec)


def _md(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _machine(d: dict) -> str:
    env = d.get("environment") or {}
    if not env:
        return d.get("machine", "machine not recorded")
    name = env.get("device_name") or env.get("cpu_model") or "?"
    threads = env.get("torch_threads")
    on_cpu = str(env.get("device", "cpu")).startswith("cpu")
    load = env.get("load_average")
    extra = []
    if on_cpu and threads:
        extra.append(f"{threads} thread{'s' if threads != 1 else ''}")
    if on_cpu and load:
        extra.append(f"load {load[0]:.1f} at start")
    return name + (f" ({', '.join(extra)})" if extra else "")


# ------------------------------------------------------------------------------------------------
def neurons_or_psn(d: dict) -> str:
    cases = d["cases"]
    bw = (d.get("bandwidth") or {}).get("gbps")
    others = []
    for c in cases:
        for r in c["rows"][1:]:
            if r["label"] not in others:
                others.append(r["label"])
    rows = []
    for c in cases:
        sf = c["rows"][0]
        by = {r["label"]: r for r in c["rows"]}
        frac = sf.get("fwd_bwd_roofline_fraction")
        if frac is None and bw and sf.get("fwd_bwd_gbps"):
            frac = sf["fwd_bwd_gbps"] / bw
        k = f" k={c['k']}" if c.get("k") not in (None, "") else ""
        cells = [
            f"{c.get('neuron') or c.get('op')} T={c['T']}{k} {c['dtype']}",
            _f(sf.get("fwd_ms")),
            _f(sf.get("fwd_bwd_ms")),
            "n/a" if frac is None else f"{100 * frac:.0f}%",
        ]
        for o in others:
            r = by.get(o)
            ratio = r.get("fwd_bwd_ratio_vs_spikeforge") if r and r.get("status", "ok") == "ok" else None
            equal = r.get("spikes_equal_to_spikeforge") if r else None
            # a ratio over other spikes is not a speed-up: the share of equal spikes goes with it
            cells.append(
                _f(ratio) + (f" (spikes {100 * equal:.1f}% equal)" if ratio and equal is not None and equal < 1 else "")
            )
        rows.append(cells)
    head = ["case", "sf fwd ms", "sf f+b ms", "f+b %bw"] + [f"x {o}" for o in others]
    return (f"copy bandwidth {_f(bw, '.1f')} GB/s; %bw = spikeforge's minimal traffic over it\n\n" if bw else "") + _md(
        head, rows
    )


def _main_job_cell(c: dict) -> str:
    """A main-job ratio, flagged as the CLI flags it where a contender of spikeforge's model computed other
    spikes or gradients."""
    if not c.get("x_spikeforge"):
        return c.get("status", "n/a")
    what = None
    if c.get("same_model"):
        what = "spikes" if c.get("same_spikes") is False else "gradients" if c.get("same_grad") is False else None
    return _f(c["x_spikeforge"], ".1f") + (f" ({what} differ)" if what else "")


def main_job(d: dict) -> str:
    rows = d["rows"]
    keys = [k for k in rows[0]["cells"] if k != "spikeforge"]
    labels = {k: rows[0]["cells"][k].get("label", k) for k in keys}
    table = []
    for r in rows:
        sf = r["cells"]["spikeforge"]
        table.append([f"T={r['T']}", _f(sf.get("ms"))] + [_main_job_cell(r["cells"][k]) for k in keys])
    return (
        f"{d.get('n', '?'):,} neurons of model {d.get('model', 'lif')}, forward + backward, float32\n\n"
        + _md(["case", "spikeforge ms"] + [f"x {labels[k]}" for k in keys], table)
        + (f"\n\n{d['summary']}" if d.get("summary") else "")
        + (f"\n\n{d['drop_in']}" if d.get("drop_in") else "")
    )


def attention(d: dict) -> str:
    others = []
    for c in d["cases"]:
        for r in c["rows"][1:]:
            if r["label"] not in others:
                others.append(r["label"])
    table = []
    for c in d["cases"]:
        sf = c["rows"][0]
        by = {r["label"]: r for r in c["rows"]}
        row = [
            f"{c['op']} {c.get('shape')}",
            _f(sf.get("fwd_ms")),
            _f(sf.get("fwd_bwd_ms")),
            _f((sf.get("saved_extra_bytes") or 0) / 2**20, ".1f"),
        ]
        for o in others:
            r = by.get(o)
            ok = r is not None and r.get("status", "ok") == "ok"
            row.append(_f(r.get("fwd_bwd_ratio_vs_spikeforge")) if ok else "n/a")
        table.append(row)
    return _md(
        ["case [T, B, heads, N, d]", "sf fwd ms", "sf f+b ms", "sf saved extra MiB"] + [f"x {o} (f+b)" for o in others],
        table,
    )


def models(d: dict) -> str:
    table = []
    for c in d["cases"]:
        rows = c.get("rows") or []
        sf = next((r for r in rows if r.get("impl") == "spikeforge"), None)
        for r in rows:
            saved = (r.get("saved") or {}).get("activations")
            x = (r["median_ms"] / sf["median_ms"]) if sf and r.get("median_ms") and sf.get("median_ms") else None
            table.append(
                [
                    f"{c['model']} T={c['T']} batch {c['batch']} {c['size']}x{c['size']}",
                    r.get("impl"),
                    _f(r.get("median_ms"), ".1f") if not r.get("error") else f"n/a ({r['error'][:60]})",
                    _f(x),
                    _f(None if saved is None else saved / 2**20, ".1f"),
                    _f(None if not r.get("peak_step_bytes") else r["peak_step_bytes"] / 2**20, ".1f"),
                ]
            )
    return _md(["case", "implementation", "step ms", "x spikeforge", "saved activations MiB", "peak MiB"], table)


def spikes(d: dict) -> str:
    table = []
    for r in d["results"]:
        table.append(
            [
                r["op"],
                r["shape"],
                f"{100 * r['rate']:g}%",
                _f(r["fwd_ms"].get("spikeforge")),
                _f(r["fwd_ms"].get("dense")),
                _f(r.get("speedup_fwd")),
                _f(r["fwd_bwd_ms"].get("spikeforge")),
                _f(r["fwd_bwd_ms"].get("dense")),
                _f(r.get("speedup_fwd_bwd")),
                f"1/{r['dense_saved_bytes'] / max(1, r['saved_bytes']):.0f}",
            ]
        )
    cross = "; ".join(
        f"{op}: forward+backward up to {_f(v.get('fwd_bwd'), 'g', 'none')}, forward up to "
        f"{_f(v.get('fwd'), 'g', 'none')}"
        for op, v in (d.get("crossover") or {}).items()
    )
    return _md(
        [
            "op",
            "shape",
            "firing",
            "event fwd ms",
            "dense fwd ms",
            "x fwd",
            "event f+b ms",
            "dense f+b ms",
            "x f+b",
            "saved vs float32",
        ],
        table,
    ) + (f"\n\ncrossover (highest swept rate the event path wins): {cross}" if cross else "")


def conv_crossover(d: dict) -> str:
    rates = sorted({float(k) for c in d["cases"] for k in c["speedup_fwd_bwd"]})
    table = []
    for c in d["cases"]:
        sp = {float(k): v for k, v in c["speedup_fwd_bwd"].items()}
        table.append(
            [f"{c['cin']}->{c['cout']} {c['kernel']}x{c['kernel']} stride {c['stride']}", f"{c['input']}x{c['input']}"]
            + [_f(sp.get(r)) for r in rates]
        )
    return f"{d.get('note', '')}; batch*T = {d.get('batch_times_T')}\n\n" + _md(
        ["conv", "map"] + [f"{100 * r:g}%" for r in rates], table
    )


def training(d: dict) -> str:
    cfg = d["config"]
    last = (d.get("history") or [{}])[-1]
    opts = ", ".join(
        f"{k} {cfg[k]}"
        for k in ("T", "width", "dim", "depth", "heads", "image_size", "epochs", "batch_size", "lr", "threads")
        if cfg.get(k) is not None
    )
    acc = d.get("test_acc")
    return (
        f"`spikeforge train --model {cfg['model']}` on {cfg.get('dataset')} ({opts}): "
        f"test accuracy {_f(None if acc is None else 100 * acc, '.2f')}% after {len(d.get('history', []))} "
        f"epochs in {_f(d.get('train_s'), '.0f')} s, {_f(d.get('n_params', 0) / 1e6, '.3f')}M parameters; "
        f"last epoch {_f(last.get('epoch_s'), '.1f')} s"
    )


def kind(d: dict) -> str:
    if not isinstance(d, dict):
        return ""
    b = str(d.get("benchmark") or d.get("target") or "")
    if "rows" in d and b.startswith("neurons (main job)"):
        return "main_job"
    if b in ("neurons", "psn") and "cases" in d:
        return "neurons_or_psn"
    if b == "attention":
        return "attention"
    if b == "models":
        return "models"
    if b == "spikes" and "results" in d:
        return "spikes"
    if "cases" in d and d["cases"] and "speedup_fwd_bwd" in d["cases"][0]:
        return "conv_crossover"
    if "config" in d and "history" in d:
        return "training"
    return ""


SUMMARIES = {
    "main_job": main_job,
    "neurons_or_psn": neurons_or_psn,
    "attention": attention,
    "models": models,
    "spikes": spikes,
    "conv_crossover": conv_crossover,
    "training": training,
}


def summarize(path: str) -> str:
    """The markdown for one file; ValueError (one line) for a file this script does not know."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read JSON ({type(e).__name__}: {e})") from None
    k = kind(d)
    if not k:
        keys = ", ".join(list(d)[:8]) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{path}: not a spikeforge benchmark or training result (top-level keys: {keys})")
    title = d.get("benchmark") or d.get("target") or k.replace("_", " ")
    machine = (
        _machine(d)
        if k != "training"
        else (_machine(d) if d.get("environment") else "machine not recorded in the file")
    )
    return f"### `{path}`: {title} on {machine}\n\n{SUMMARIES[k](d)}\n"


def main(argv: list) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    status = 0
    for path in argv:
        try:
            print(summarize(path))
        except ValueError as e:
            print(f"summarize: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
