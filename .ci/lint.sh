#!/usr/bin/env bash
# Lint: ruff (lint + format check) over python/, tests/, bench/; mypy over the public API (pyproject
# [tool.mypy]); clang-format over csrc/ (.clang-format). Pinned versions, so a new release of a tool
# never fails CI on code that did not change. Fix locally with:
#   ruff check --fix . && ruff format . && clang-format -i $(git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.cuh')
set -euo pipefail
cd "$(dirname "$0")/.."
pip install ruff==0.17.6 mypy==2.4.1 clang-format==19.1.7
ruff check .
ruff format --check .
mypy
git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.cuh' 'tests/cpp/*.cpp' | xargs clang-format --dry-run -Werror
