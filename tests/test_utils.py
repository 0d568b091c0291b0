"""The shared helpers of `shark_hf.utils`: atomic writes, previews, local path vs repo id."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shark_hf.codes import cohort_codes
from shark_hf.utils import atomic_write, atomic_write_text, is_local_path, preview


def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "new" / "file.json"  # the folder is created
    atomic_write_text(path, "first\n")
    atomic_write_text(path, "é second\n")
    assert path.read_bytes() == "é second\n".encode()
    assert [p.name for p in path.parent.iterdir()] == ["file.json"]


def test_failed_atomic_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("old")

    def half_written(tmp: str) -> None:
        Path(tmp).write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_written)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_gives_the_mode_of_a_new_file_even_when_the_writer_makes_it_private(tmp_path, umask):
    import torch
    from safetensors.torch import save_file

    old = os.umask(umask)
    try:
        path = tmp_path / "tensors.safetensors"
        atomic_write(path, lambda tmp: save_file({"a": torch.zeros(2)}, tmp))  # safetensors writes 0o600
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_preview_shows_at_most_limit_items_then_the_count():
    assert preview(["a", "b"]) == "a, b"
    assert preview([1, 2, 3, 4], limit=2) == "1, 2, ... (4 in all)"
    assert preview([]) == ""


@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("org/model", False),
        ("model", False),
        ("./model", True),
        ("../org/model", True),
        ("/abs/path", True),
        ("~/models/x", True),
    ],
)
def test_is_local_path_by_shape(name, local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_local_path(name) is local


def test_is_local_path_when_it_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert is_local_path("org/model") and is_local_path(Path("org"))


def test_cohort_codes_are_the_distinct_codes_of_every_split_sorted():
    cohort = {
        "train": {"visits": [[["ICD9CM:4019", "ICD9CM:25000"], ["ICD9CM:4019"]]]},
        "test": {"visits": [[["ICD9CM:042"]], [["ICD9CM:25000"]]]},
    }
    assert cohort_codes(cohort) == ["ICD9CM:042", "ICD9CM:25000", "ICD9CM:4019"]


def test_utils_imports_no_framework():
    # Import the module file alone (no shark_hf package __init__ at all).
    script = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('u', 'shark_hf/utils.py')\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(sorted({'torch', 'transformers', 'numpy'} & set(sys.modules)))\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
