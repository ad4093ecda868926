"""The documentation a user reads runs and points only at things a user has.

- Every ```python block of README.md runs verbatim (each in a fresh namespace).
- README's test command is the one CI runs (.ci/run), and its two commands come first.
- Nothing a user reads points at shared/ (design notes users do not have): files or --help texts.
- No HTML comments naming work items in README or docs/.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def _blocks(text, lang):
    return re.findall(r"```" + lang + r"\n(.*?)```", text, flags=re.S)


README = _read("README.md")
PY_BLOCKS = _blocks(README, "python")


def test_readme_has_python_blocks():
    assert PY_BLOCKS


@pytest.mark.parametrize("i", range(len(PY_BLOCKS)))
def test_readme_python_block_runs(i):
    # a subprocess: the block runs as a user would paste it, with nothing imported or defined beforehand, on
    # the spikeforge this test session imports (the installed one in CI)
    import spikeforge

    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(spikeforge.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    r = subprocess.run(
        [sys.executable, "-c", PY_BLOCKS[i]],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=os.path.dirname(ROOT),
    )
    assert r.returncode == 0, f"README python block {i} failed:\n{PY_BLOCKS[i]}\n{r.stderr[-2000:]}"


def test_readme_commands_first_and_ci_runs_the_test_command():
    bash = _blocks(README, "bash")
    assert bash[0].strip() == "pip install torch==2.13.0 && pip install . && spikeforge bench neurons"
    test_cmd = bash[1].strip()
    assert test_cmd.startswith("pip install torch==") and test_cmd.endswith("python -m pytest tests -q")
    assert test_cmd in _read(".ci", "run").splitlines()
    assert README.index(bash[1]) < README.index("## ")  # both commands above the first section


# Everything in the project: users read the docs, the CLI and tools, and the sources too (docstrings,
# comments), so nothing may point at design notes they do not have.
USER_FACING = ("README.md", "CMakeLists.txt", "pyproject.toml", "docs", "bench", ".ci", "python", "csrc", "tests")


def _project_files():
    skip_dirs = {"__pycache__", "results"}
    for top in USER_FACING:
        path = os.path.join(ROOT, top)
        if os.path.isfile(path):
            yield path
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if d not in skip_dirs]
            for name in filenames:
                if name.endswith((".py", ".md", ".txt", ".toml", ".sh", ".h", ".cpp", ".cu", ".cuh")) or name == "run":
                    yield os.path.join(dirpath, name)


def test_nothing_points_at_shared():
    this = os.path.abspath(__file__)
    hits = []
    for path in _project_files():
        if os.path.abspath(path) == this:
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if re.search(r"(?<![\w.-])shared/[A-Z]", line):
                    hits.append(f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_help_texts_do_not_point_at_shared(capsys):
    from spikeforge import cli

    for argv in (
        ["--help"],
        ["bench", "--help"],
        ["bench", "neurons", "--help"],
        ["train", "--help"],
        ["energy", "--help"],
        ["info", "--help"],
    ):
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert "shared/" not in capsys.readouterr().out, argv


def test_no_work_item_markers():
    for path in [os.path.join(ROOT, "README.md")] + [
        os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
    ]:
        text = _read(path)
        assert "<!--" not in text, path
        assert not re.search(r"\bissue \d+\b", text, flags=re.I), path


def test_docs_links_resolve():
    for path in [os.path.join(ROOT, "README.md")] + [
        os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
    ]:
        for target in re.findall(r"\]\(([^)#:]+)\)", _read(path)):
            assert os.path.exists(os.path.join(os.path.dirname(path), target)), f"{path}: {target}"


def test_api_page_lists_exactly_each_packages_all():
    """docs/api.md names every public name of every package and nothing else (an API audit found names that no
    page mentioned, and page entries a rename would leave behind)."""
    import importlib

    text = _read("docs", "api.md")
    sections = re.split(r"^## `([\w.]+)`$", text, flags=re.M)[1:]
    listed = {sections[i]: sections[i + 1] for i in range(0, len(sections), 2)}
    assert "spikeforge.ops" in listed and "spikeforge.models" in listed
    for mod, body in listed.items():
        try:
            module = importlib.import_module(mod)
        except ImportError:  # a drop-in module without its peer library (SpikingJelly, snnTorch) installed
            continue
        names = set()
        for line in body.splitlines():
            if line.startswith("- `"):
                names.add(re.match(r"- `(\w+)`", line).group(1))
            elif line.startswith("- ") and " models: " in line:
                names.update(re.findall(r"`(\w+)`", line))
        assert names == set(module.__all__), (mod, names ^ set(module.__all__))
