"""Markdown summary of a `spikeforge bench` JSON file (neurons or psn), for README.md.

usage: python bench/summarize.py bench/results/cuda_neurons.json [more.json ...]
One row per case: spikeforge's default forward and forward+backward time, its roofline fraction
(forward+backward, minimal-traffic model, against the copy bandwidth measured in the same run), and the
forward+backward ratio of every other contender (their time / spikeforge's: > 1 means spikeforge is faster).
"""
import json
import sys


def _name(case):
    k = f" k={case['k']}" if case.get("k") not in (None, "") else ""
    return f"{case.get('neuron') or case.get('op')} T={case['T']}{k} {case['dtype']}"


def summarize(path):
    d = json.load(open(path))
    env = d["environment"]
    dev = env.get("device_name", "?")
    threads = env.get("torch_threads")
    where = f"{dev}" + (f", {threads} threads" if threads and d["cases"][0]["device"] == "cpu" else "")
    print(f"`{path}`: {d['benchmark']} on {where}, copy bandwidth {d['bandwidth']['gbps']:.0f} GB/s\n")
    others = []
    for c in d["cases"]:
        for r in c["rows"]:
            if r["impl"] != c["rows"][0]["impl"] and r["label"] not in others:
                others.append(r["label"])
    head = ["case", "sf fwd ms", "sf f+b ms", "f+b %bw"] + [f"x {o}" for o in others]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for c in d["cases"]:
        sf = c["rows"][0]
        by = {r["label"]: r for r in c["rows"]}
        cells = [_name(c), f"{sf['fwd_ms']:.2f}", f"{sf['fwd_bwd_ms']:.2f}",
                 f"{100 * sf['fwd_bwd_roofline_fraction']:.0f}%"]
        for o in others:
            r = by.get(o)
            ok = r is not None and r.get("status") == "ok" and r.get("fwd_bwd_ratio_vs_spikeforge")
            cells.append(f"{r['fwd_bwd_ratio_vs_spikeforge']:.2f}" if ok else "n/a")
        print("| " + " | ".join(cells) + " |")
    print()


if __name__ == "__main__":
    for p in sys.argv[1:]:
        summarize(p)
