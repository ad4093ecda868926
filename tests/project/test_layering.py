"""Imports only go down: cli -> tools -> models -> nn -> ops -> native. Checked on the source (ast), so a new
upward import fails here before it becomes an import cycle; and the hooks nn owns for observers work."""

import ast
import os

import pytest
import torch

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "python", "spikeforge")
LAYERS = ["cli", "tools", "models", "nn", "ops"]  # top to bottom; train/data sit with tools


def _imports(path):
    """(module, names) of every import in a file, relative ones resolved to spikeforge.<...>."""
    rel = os.path.relpath(path, os.path.dirname(PKG)).replace(os.sep, "/")[:-3].split("/")
    package = rel[:-1] if rel[-1] != "__init__" else rel[:-1]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def _files(layer):
    root = os.path.join(PKG, layer)
    for dirpath, _, names in os.walk(root):
        for n in names:
            if n.endswith(".py"):
                yield os.path.join(dirpath, n)


@pytest.mark.parametrize("layer", ["nn", "models", "tools"])
def test_no_upward_imports(layer):
    above = LAYERS[: LAYERS.index(layer)] + (["train", "data"] if layer in ("nn", "models") else [])
    bad = []
    for path in _files(layer):
        for mod, names in _imports(path):
            parts = mod.split(".")
            if parts[0] != "spikeforge":
                continue
            targets = [parts[1]] if len(parts) > 1 else names  # "from .. import tools" names the layer
            if any(t in above for t in targets):
                bad.append(f"{os.path.relpath(path, PKG)} imports {mod} {names}")
    assert not bad, "\n".join(bad)


def test_accounting_is_a_leaf():
    for mod, _ in _imports(os.path.join(PKG, "nn", "_accounting.py")):
        assert not mod.startswith("spikeforge"), mod


def test_tools_use_no_private_nn_names():
    for path in _files("tools"):
        for mod, names in _imports(path):
            if mod.startswith("spikeforge.nn"):
                private = [n for n in names if n.startswith("_")]
                assert not private, f"{os.path.relpath(path, PKG)}: {mod} {private}"


def test_run_through_forward_nests_and_routes_the_fused_path():
    import spikeforge as sf
    from spikeforge.nn import fused
    from spikeforge.nn.observe import forward_required, is_multi_step, is_neuron, run_through_forward

    bn, sn = sf.nn.SeqBatchNorm2d(4), sf.nn.IF()
    assert is_neuron(sn) and is_multi_step(sn) and not is_neuron(bn)
    y = torch.randn(2, 3, 4, 5, 5, requires_grad=True)
    calls = []
    hook = sn.register_forward_hook(lambda *a: calls.append(1))
    fused.bn_spike(bn, sn, y, True)
    assert calls == []  # fused: the neuron's forward (and hooks) skipped
    h1, h2 = run_through_forward(sn), run_through_forward(sn)
    sn.reset()
    fused.bn_spike(bn, sn, y, True)
    assert calls == [1]
    h1.remove()
    assert forward_required(sn)  # the second holder still needs it
    h2.remove()
    h2.remove()  # idempotent
    assert not forward_required(sn)
    hook.remove()
    with pytest.raises(TypeError, match="module"):
        run_through_forward("not a module")
