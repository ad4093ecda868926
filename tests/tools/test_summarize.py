"""bench/summarize.py prints a table for every result file in bench/results/ and names its machine."""

import glob
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import summarize  # noqa: E402

RESULTS = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "*.json")))


def test_there_are_results():
    assert len(RESULTS) >= 8


@pytest.mark.parametrize("path", RESULTS, ids=os.path.basename)
def test_every_result_file(path):
    text = summarize.summarize(path)
    assert text.startswith("### ") and " on " in text.splitlines()[0]
    assert "|" in text or "test accuracy" in text


def test_main_job_json_and_unknown_files(tmp_path, capsys):
    main_job = {
        "benchmark": "neurons (main job)",
        "machine": "Some CPU, 2 threads",
        "n": 1024,
        "summary": "In short: ...",
        "rows": [
            {
                "T": 4,
                "n": 1024,
                "cells": {
                    "spikeforge": {"label": "spikeforge", "ms": 1.0},
                    "reference": {"label": "PyTorch loop", "ms": 5.0, "x_spikeforge": 5.0},
                    "snntorch": {"label": "snnTorch", "status": "not installed"},
                    "spikingjelly": {
                        "label": "SJ",
                        "ms": 3.0,
                        "x_spikeforge": 3.0,
                        "same_model": True,
                        "same_spikes": False,
                    },
                },
            }
        ],
    }
    p = tmp_path / "main.json"
    p.write_text(json.dumps(main_job))
    text = summarize.summarize(str(p))
    assert "Some CPU" in text and "5.0" in text and "not installed" in text
    assert "3.0 (spikes differ)" in text  # the CLI's flag survives into the docs' tables
    q = tmp_path / "other.json"
    q.write_text(json.dumps({"hello": 1}))
    assert summarize.main([str(q)]) == 1
    assert "not a spikeforge benchmark" in capsys.readouterr().err
