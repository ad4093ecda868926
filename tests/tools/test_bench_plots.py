"""`spikeforge bench --plot` charts drawn from small synthetic result dicts (the benchmarks themselves are
not run here): roofline fractions (neurons, psn), crossover curves (spikes), step time and memory (models)."""

import pytest

from bench_helpers import bench_module

bench_models, bench_neurons, bench_psn, bench_spikes = (bench_module(n) for n in ("models", "neurons", "psn", "spikes"))

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"


def _png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG


def _row(label, default, ms, gbps, bw=100.0):
    row = {
        "label": label,
        "impl": label,
        "default": default,
        "status": "ok",
        "note": "",
        "fwd_ms": ms,
        "fwd_bwd_ms": 2 * ms,
        "fwd_gbps": gbps,
        "fwd_bwd_gbps": gbps / 2,
    }
    return row


def test_neurons_plot_roofline_fractions(tmp_path):
    cases = [
        {
            "neuron": n,
            "T": 4,
            "dtype": "float32",
            "rows": [_row("spikeforge", True, 1.0, 50.0), _row("reference", False, 4.0, 12.5)],
        }
        for n in ("lif", "if")
    ]
    bench_neurons.set_roofline_fractions(cases, 100.0)
    assert cases[0]["rows"][0]["fwd_roofline_fraction"] == 0.5
    assert cases[0]["rows"][1]["fwd_bwd_roofline_fraction"] == 0.0625
    for c in cases:
        for r in c["rows"]:
            for phase in ("fwd", "fwd_bwd"):
                r[f"{phase}_ratio_vs_spikeforge"] = r[f"{phase}_ms"] / c["rows"][0][f"{phase}_ms"]
    path = tmp_path / "neurons.png"
    bench_neurons.plot(cases, str(path), "synthetic")
    assert _png(path)


def test_psn_plot_roofline_and_ratio(tmp_path):
    rows = [_row("spikeforge", True, 1.0, 40.0), _row("reference", False, 3.0, 13.0)]
    rows.append({"label": "torch.compile", "status": "n/a: skipped"})  # a contender without numbers
    for r in rows[:2]:
        r["fwd_bwd_roofline_fraction"] = r["fwd_bwd_gbps"] / 100.0
        r["fwd_bwd_ratio_vs_spikeforge"] = r["fwd_bwd_ms"] / 2.0
    cases = [{"op": "psn", "T": 4, "dtype": "float32", "rows": rows}]
    path = tmp_path / "psn.png"
    bench_psn.plot(cases, str(path), "synthetic")
    assert _png(path)


def test_spikes_plot_crossover_curves(tmp_path):
    results = [
        {
            "op": op,
            "rate": rate,
            "shape": [16, 64],
            "fwd_ms": {"spikeforge": 10 * rate, "dense": 1.0},
            "fwd_bwd_ms": {"spikeforge": 20 * rate, "dense": 2.0},
        }
        for op in ("linear", "conv2d")
        for rate in (0.5, 0.01, 0.1)
    ]
    path = tmp_path / "spikes.png"
    bench_spikes.plot(results, ["linear", "conv2d"], str(path), "cpu")
    assert _png(path)


def test_models_plot(tmp_path):
    cases = [
        {
            "model": "sew_resnet18",
            "T": 2,
            "batch": 2,
            "size": 32,
            "rows": [
                {"impl": "spikeforge", "median_ms": 10.0, "saved": {"activations": 2**20}},
                {"impl": "reference", "median_ms": 30.0, "saved": {"activations": 3 * 2**20}},
                {"impl": "spikingjelly", "median_ms": None, "saved": None},
            ],
        }
    ]
    path = tmp_path / "models.png"
    bench_models.plot(cases, str(path), "synthetic")
    assert _png(path)


def test_every_bench_target_takes_json_and_plot():
    from spikeforge import cli

    from spikeforge.cli.bench import FULL_TARGETS

    parser = cli.build_parser()
    for name in FULL_TARGETS:
        full = ["--full"] if name == "neurons" else []  # the main job's runner has no plot; --full has
        if not full:
            args = parser.parse_args(["bench", name, "--json", "a.json", "--plot", "a.png"])
            assert (args.json, args.plot) == ("a.json", "a.png")
        assert callable(getattr(bench_module(name), "plot", None)), name
