"""`shark-hf`: every subcommand on tiny inputs, in process (`main([...])`) and as the console script.

One pipeline is shared by the module: built-in cohort (100 patients) -> mimic3 cohort -> embeddings of a few
codes -> semantic / random / index tokenizers -> one short `shark-hf train` subprocess (random-ID tokenizer
over every cohort code, 1 epoch) -> evaluate, predict, push. `demo` is left to `make demo`.
"""

import gzip
import io
import json
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk

from shark_hf.cli import COMMANDS, MAX_MESSAGE, UserError, _one_line, main
from shark_hf.codes import cohort_codes, label_names
from shark_hf.data.synthetic import write_synthetic_cohort
from shark_hf.embeddings import load_embeddings
from shark_hf.tokenization_shark import SharkTokenizer

SHARK_HF = shutil.which("shark-hf", path=str(Path(sys.executable).parent)) or shutil.which("shark-hf")

# Five codes in several spellings, a comment and a blank line.
CODES_FILE = "# cardiometabolic and friends\n401.9\nICD9CM:25000\n428.0\n\n584.9\n486\n427.31\n"
CODES = ["ICD9CM:4019", "ICD9CM:25000", "ICD9CM:4280", "ICD9CM:5849", "ICD9CM:486", "ICD9CM:42731"]
PATIENTS = [[["401.9", "250.00"], ["428.0", "584.9"]], {"patient_id": "p2", "visits": [["ICD9CM:486"]]}]


def cli(command: str) -> tuple[int, str, str]:
    """Run `shark-hf COMMAND` (split on whitespace) in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(command.split())
        except SystemExit as exit_:  # argparse: --help, usage errors
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def ok(command: str) -> str:
    code, out, err = cli(command)
    assert code == 0, err
    return out


def console_script(command: str) -> subprocess.CompletedProcess:
    """Run the installed `shark-hf` console script in a subprocess."""
    return subprocess.run([SHARK_HF, *command.split()], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "codes.txt").write_text(CODES_FILE)
    (root / "patients.json").write_text(json.dumps(PATIENTS))
    (root / "malformed.json").write_text('[[["401.9"')
    (root / "not_patients.json").write_text('{"visits": []}')
    (root / "unknown_code.json").write_text('[[["401.9", "999.99"]]]')
    (root / "unknown_codes.txt").write_text("401.9\n999.99\n")
    (root / "invalid_code.json").write_text('[[["401.9", "XYZ.1"]]]')
    return root


@pytest.fixture(scope="module")
def raw(work) -> tuple[Path, str]:
    out = ok(f"build-dataset synthetic --out {work}/raw --num-patients 100 --seed 3")
    return work / "raw", out


@pytest.fixture(scope="module")
def cohort(work, raw) -> tuple[Path, str]:
    out = ok(f"build-dataset mimic3 --root {raw[0]} --out {work}/cohort")
    return work / "cohort", out


@pytest.fixture(scope="module")
def embeddings(work) -> tuple[Path, str]:
    """The only embedding run of the module (loads MiniLM once)."""
    out = ok(f"embed --codes {work}/codes.txt --out {work}/emb.safetensors")
    return work / "emb.safetensors", out


@pytest.fixture(scope="module")
def semantic_tokenizer(work, embeddings) -> tuple[Path, str]:
    out = ok(
        f"fit-tokenizer --embeddings {embeddings[0]} --levels 2 --codebook-size 3 --out {work}/tok_semantic"
    )
    return work / "tok_semantic", out


@pytest.fixture(scope="module")
def random_tokenizer(work, cohort) -> Path:
    out = work / "tok_random"
    ok(f"fit-tokenizer --kind random --cohort {cohort[0]} --levels 2 --codebook-size 32 --out {out}")
    return out


@pytest.fixture(scope="module")
def trained(work, cohort, random_tokenizer) -> Path:
    """`shark-hf train` as a subprocess of the console script: 1 epoch over 70 training patients."""
    run = work / "run"
    result = console_script(
        f"train --cohort {cohort[0]} --tokenizer {random_tokenizer} --output_dir {run} --num_epochs 1 "
        "--batch_size 32 --seed 0"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run


# ------------------------------------------------------------------------------------------------ usage


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_with_examples(command):
    code, out, _ = cli(f"{command} --help")
    assert code == 0
    assert out.startswith(f"usage: shark-hf {command}")
    assert f"examples:\n  shark-hf {command}" in out or "examples:\n  echo" in out
    if command == "train":  # the training run's own flags are listed too
        assert "--num_epochs" in out and "--accelerate-config" in out


@pytest.mark.parametrize(
    "command",
    [
        "",
        "predict",
        "embed --codes a.txt --system ICD9CM --out e.safetensors",
        "inspect-tokenizer tok --bogus",
        "fit-tokenizer --code-systems ICD9CM,ICD11 --out tok",
        "predict --model m --input p.json --top-k 0",
    ],
)
def test_usage_errors_exit_2(command):
    code, out, err = cli(command)
    assert code == 2 and out == ""
    assert err.startswith("usage: shark-hf") and "error:" in err


# ------------------------------------------------------------------------------------------ build-dataset


def test_build_dataset_synthetic_writes_mimic3_csvs(raw):
    folder, out = raw
    assert (folder / "ADMISSIONS.csv").is_file() and (folder / "DIAGNOSES_ICD.csv").is_file()
    settings = json.loads((folder / "synthetic_cohort.json").read_text())
    assert (settings["scale"], settings["seed"], settings["num_patients"]) == ("mimic3", 3, 100)
    assert f"Next: shark-hf build-dataset mimic3 --root {folder} --out cohort/" in out


def test_build_dataset_mimic3_saves_the_cohort_and_prints_the_report(cohort):
    folder, out = cohort
    dataset = load_from_disk(str(folder))
    assert {name: len(split) for name, split in dataset.items()} == dict(train=70, validation=10, test=20)
    assert "Unusable rows: 0" in out and "ADMISSIONS.csv" in out and out.endswith(f"-> {folder}\n")
    patients = [pid for split in dataset.values() for pid in split["patient_id"]]
    assert len(set(patients)) == 100


def test_build_dataset_table_gives_the_same_patients_and_splits(work, raw, cohort):
    out = ok(
        f"build-dataset table --root {raw[0]}/DIAGNOSES_ICD.csv --patient-col SUBJECT_ID --visit-col HADM_ID "
        f"--code-col ICD9_CODE --system ICD9CM --out {work}/table"
    )
    assert "Cohort from table" in out
    table, mimic = load_from_disk(str(work / "table")), load_from_disk(str(cohort[0]))
    for name in ("train", "validation", "test"):
        assert sorted(table[name]["patient_id"]) == sorted(mimic[name]["patient_id"])


def test_build_dataset_replaces_a_cohort_but_never_another_folder(work, raw):
    ok(f"build-dataset mimic3 --root {raw[0]} --out {work}/again --seed 0")
    first = load_from_disk(str(work / "again"))["test"]["patient_id"]
    ok(f"build-dataset mimic3 --root {raw[0]} --out {work}/again --seed 1")
    assert load_from_disk(str(work / "again"))["test"]["patient_id"] != first
    assert not [p for p in work.iterdir() if p.name.startswith(".again")]  # no temporary folders left
    code, _, err = cli(f"build-dataset mimic3 --root {raw[0]} --out {raw[0]}")
    assert code == 1 and f"{raw[0]} exists and is not a cohort folder" in err
    assert (raw[0] / "ADMISSIONS.csv").is_file()


def test_build_dataset_refuses_an_empty_split_and_writes_nothing(work):
    raw = write_synthetic_cohort(work / "four_patients", "mimic3", num_patients=4)
    code, _, err = cli(f"build-dataset mimic3 --root {raw} --out {work}/tiny_cohort")
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"shark-hf build-dataset: error: {raw}: the validation split(s) would be empty (samples: train 2, "
        "validation 0, test 2); patients are split 7:1:2, so the data needs more patients with --min-visits "
        "visits"
    )
    assert not (work / "tiny_cohort").exists()


# ---------------------------------------------------------------------------------- embed, fit, inspect


def test_embed_codes_file(embeddings):
    path, out = embeddings
    loaded = load_embeddings(path)
    assert loaded.codes == CODES and loaded.vectors.shape == (6, 384)
    assert torch.allclose(loaded.vectors.norm(dim=1), torch.ones(6), atol=1e-5)
    assert out == f"Embedded 6 codes (384-d, text=description) -> {path}\n"


def test_fit_tokenizer_semantic_random_index(work, embeddings, semantic_tokenizer, cohort, random_tokenizer):
    path, out = semantic_tokenizer
    tokenizer = SharkTokenizer.from_pretrained(path)
    expected = SharkTokenizer.fit(load_embeddings(embeddings[0]), num_levels=2, codebook_size=3, seed=0)
    assert tokenizer.fingerprint == expected.fingerprint and tokenizer.codes == CODES
    assert out.startswith("semantic tokenizer: 6 codes, L=2, K=3, collision rate")

    cohort_codes = sorted(
        {c for s in load_from_disk(str(cohort[0])).values() for p in s["visits"] for v in p for c in v}
    )
    random_ids = SharkTokenizer.from_pretrained(random_tokenizer)
    assert random_ids.fingerprint == SharkTokenizer.random_ids(cohort_codes, 2, 32, seed=0).fingerprint

    out = ok(f"fit-tokenizer --kind index --codes {work}/codes.txt --out {work}/tok_index")
    index = SharkTokenizer.from_pretrained(work / "tok_index")
    assert (index.kind, index.num_levels, index.codebook_size, index.codes) == ("index", 1, 6, CODES)
    assert torch.equal(index.ids[:, 0], torch.arange(6))
    assert out == f"index tokenizer: 6 codes, L=1, K=6, collision rate 0.0000 -> {work / 'tok_index'}\n"


def test_inspect_tokenizer_text_and_json(semantic_tokenizer):
    path = semantic_tokenizer[0]
    out = ok(f"inspect-tokenizer {path} --min-size 1")
    assert out.startswith("SharkTokenizer(kind='semantic', num_codes=6, num_levels=2, codebook_size=3")
    assert "reconstruction MSE after each level: " in out and "Cluster ID" in out
    assert "Codes from different ICD chapters sharing IDs at levels 2..2" in out
    # The six codes of CODES_FILE: a chosen list, no ICD-10 code, so no GEM pair.
    assert "code table: a chosen list of codes (fitted on a cohort, it lists the cohort's codes)" in out
    assert "codes sharing their IDs with another code, levels 1-1: " in out and "GEM" not in out

    report = json.loads(ok(f"inspect-tokenizer {path} --min-size 1 --json"))
    assert report["tokenizer"]["kind"] == "semantic" and "codes" not in report["tokenizer"]
    assert report["code_systems"] is None and report["gem_alignment"] is None
    assert report["collisions"]["num_codes"] == 6
    level_one = [c for c in report["clusters"] if c["level"] == 1]
    assert sum(c["size"] for c in level_one) == 6
    assert all(c["purity"] == c["majority_count"] / c["size"] for c in report["clusters"])


def test_inspect_tokenizer_draws_the_code_map(work, semantic_tokenizer, random_tokenizer):
    path = semantic_tokenizer[0]
    code, out, err = cli(f"inspect-tokenizer {path} --min-size 1 --json --code-map {work}/map.png")
    assert code == 0 and json.loads(out)["collisions"]["num_codes"] == 6  # stdout stays pure JSON
    assert err == f"code map written to {work}/map.png\n"
    assert (work / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, err = cli(f"inspect-tokenizer {random_tokenizer} --code-map {work}/random.png")
    assert code == 1 and not (work / "random.png").exists()
    assert f"--code-map needs a semantic tokenizer; {random_tokenizer} is of kind 'random'" in err


# -------------------------------------------------------------------------- train, evaluate, predict, push


def test_train_writes_model_tokenizer_and_metrics(trained, random_tokenizer):
    for name in ("config.json", "model.safetensors", "metrics.json", "log.jsonl"):
        assert (trained / name).is_file(), name
    saved = SharkTokenizer.from_pretrained(trained / "tokenizer")
    assert saved.fingerprint == SharkTokenizer.from_pretrained(random_tokenizer).fingerprint
    assert json.loads((trained / "metrics.json").read_text())["test"]["num_samples"] == 20


def test_evaluate_reproduces_the_training_test_metrics(work, trained, cohort):
    metrics = json.loads(ok(f"evaluate --model {trained} --cohort {cohort[0]}"))
    logged = json.loads((trained / "metrics.json").read_text())["test"]
    assert metrics["split"] == "test" and metrics["num_samples"] == 20
    for key in ("P@10", "P@20", "Acc@10", "Acc@20", "micro_auc"):
        assert metrics[key] == pytest.approx(logged[key], abs=1e-6), key
    out = ok(f"evaluate --model {trained} --cohort {cohort[0]} --split validation --out {work}/m.json")
    assert out == f"-> {work / 'm.json'}\n"
    assert json.loads((work / "m.json").read_text())["num_samples"] == 10


def test_evaluate_baselines_match_training_and_give_the_lift(trained, cohort):
    report = json.loads(ok(f"evaluate --model {trained} --cohort {cohort[0]} --baselines"))
    logged = json.loads((trained / "metrics.json").read_text())
    assert report["best_baseline"] == logged["best_baseline"]
    assert set(report["baselines"]) == {"most_frequent", "last_visit", "history"}
    for name, metrics in report["baselines"].items():
        for key in ("P@10", "P@20", "Acc@10", "Acc@20"):
            assert metrics[key] == logged["baselines"][name]["test"][key], (name, key)
    best = report["baselines"][report["best_baseline"]]
    assert report["lift_over_best_baseline"] == {
        key: report[key] - best[key] for key in ("P@10", "P@20", "Acc@10", "Acc@20")
    }


def test_predict_top_k_with_names_probabilities_and_attention(work, trained):
    predictions = json.loads(ok(f"predict --model {trained} --input {work}/patients.json --top-k 3"))
    assert [p["patient_id"] for p in predictions] == ["0", "p2"]
    names = label_names("ccs")
    for prediction, visits in zip(predictions, (2, 1), strict=True):
        probabilities = [label["probability"] for label in prediction["labels"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert all(0 < p < 1 for p in probabilities)
        assert all(label["name"] == names[label["label"]] for label in prediction["labels"])
        assert len(prediction["visit_attention"]) == visits
        assert sum(prediction["visit_attention"]) == pytest.approx(1.0, abs=1e-6)
    ok(f"predict --model {trained} --input {work}/patients.json --out {work}/pred.json")
    assert len(json.loads((work / "pred.json").read_text())[0]["labels"]) == 20


def test_push_then_inspect_and_predict_from_the_hub(local_hub, work, trained):
    out = ok(f"push --model {trained} --repo test-org/shark-cli --token x")
    assert out.startswith(f"Pushed {trained} (model, tokenizer/, README.md) -> ")
    repo = local_hub.hub.repos["test-org/shark-cli"]
    files = repo.commits[repo.branches["main"]].files
    assert {"README.md", "config.json", "model.safetensors", "tokenizer/tokenizer_config.json"} <= set(files)
    assert not [name for name in files if name.startswith("checkpoints") or name == "log.jsonl"]

    report = json.loads(ok("inspect-tokenizer test-org/shark-cli --subfolder tokenizer --json"))
    assert report["tokenizer"]["kind"] == "random"
    remote = json.loads(ok(f"predict --model test-org/shark-cli --input {work}/patients.json"))
    local = json.loads(ok(f"predict --model {trained} --input {work}/patients.json"))
    assert remote == local


# ------------------------------------------------------------------------------------------- bad input

BAD_INPUT = [
    # (argv with {work}/{run}/{cohort}/{raw} placeholders, text the one-line message must contain)
    ("embed --codes {work}/missing.txt --out {work}/e.safetensors", "missing.txt: no such file"),
    ("embed --codes {work}/unknown_codes.txt --out {work}/e.safetensors", "99999"),
    ("fit-tokenizer --embeddings {work}/missing.safetensors --out {work}/t", "missing.safetensors"),
    ("fit-tokenizer --embeddings {work}/malformed.json --out {work}/t", "malformed.json"),
    ("fit-tokenizer --codes {work}/codes.txt --out {work}/t", "--kind semantic needs --embeddings"),
    (
        "fit-tokenizer --code-systems ICD9CM --kind random --out {work}/t",
        "--code-systems fits a semantic tokenizer: leave out --kind or use --system",
    ),
    ("build-dataset mimic3 --root {work}/missing --out {work}/c", "missing"),
    ("build-dataset mimic3 --root {cohort} --out {work}/c", "ADMISSIONS.csv"),
    ("build-dataset table --root {raw}/DIAGNOSES_ICD.csv --out {work}/c", "needs --patient-col, --code-col"),
    ("build-dataset mimic3 --root {raw} --out {work}/c --system ICD9CM", "--system: only for the `table`"),
    ("evaluate --model {run} --cohort {raw}", "{raw} is not a cohort folder (no dataset_dict.json)"),
    ("evaluate --model {cohort} --cohort {cohort}", "{cohort} is not a model folder (no config.json)"),
    ("evaluate --model {run} --cohort {cohort} --split dev", "has no split 'dev'"),
    ("predict --model {run} --input {work}/malformed.json", "malformed.json is not valid JSON"),
    ("predict --model {run} --input {work}/missing.json", "missing.json: no such file"),
    ("predict --model {run} --input {work}/not_patients.json", "must hold a non-empty JSON list of patients"),
    (
        "predict --model {run} --input {work}/unknown_code.json",
        "1 codes not in the tokenizer: [ICD9CM:99999] (--unknown skip drops them; --unknown embed encodes "
        "unseen codes)",
    ),
    (
        "predict --model {run} --input {work}/invalid_code.json",
        "error: 1 strings that are not valid ICD-9-CM or ICD-10-CM codes: [XYZ.1] (--unknown skip drops them",
    ),
    (
        "evaluate --model {run} --cohort {cohort} --tokenizer {semantic} --unknown skip",
        "Use the tokenizer saved with the model (leave out --tokenizer).",
    ),
    (
        "train --cohort {cohort} --tokenizer {semantic} --output_dir {work}/r --unknown skip "
        "--init_from {run}",
        "Use the tokenizer saved with the model, or pass --allow_tokenizer_mismatch if the ids are known to "
        "be compatible.",
    ),
    (
        "train --cohort {cohort} --tokenizer {semantic} --output_dir {work}/r",
        "codes of the cohort (train, validation, test) not in the tokenizer: [",
    ),
    (
        "predict --model {work}/missing_model --input {work}/patients.json",
        "missing_model: no such model folder",
    ),
    ("predict --model {run} --tokenizer {cohort} --input {work}/patients.json", "is not a tokenizer folder"),
    ("evaluate --model {run} --cohort {cohort} --tokenizer {semantic}", "tokenizer mismatch: tokenizer kind"),
    ("inspect-tokenizer {cohort}", "{cohort} is not a tokenizer folder (no tokenizer_config.json)"),
    ("inspect-tokenizer {work}/missing/tok", "no such tokenizer folder"),
    ("push --model {cohort} --repo org/x --token x", "{cohort} is not a model folder"),
    ("train --cohort {raw} --tokenizer {run}/tokenizer --output_dir {work}/r", "is not a cohort folder"),
    ("train --cohort {cohort} --tokenizer {cohort} --output_dir {work}/r", "is not a tokenizer folder"),
    ("train --cohort mimic3 --tokenizer {run}/tokenizer --output_dir {work}/r", "needs --root"),
    (  # refused before `accelerate launch` starts any process
        "train --num-processes 2 --cohort {cohort} --tokenizer {run}/tokenizer --output_dir {run}",
        "--output_dir {run} already holds a training run (config.json, metrics.json, log.jsonl): pass "
        "--resume_from_checkpoint latest to continue it, or --overwrite_output_dir to replace it",
    ),
    (
        "train --cohort {cohort} --tokenizer {run}/tokenizer --output_dir {run}/../run/ --init_from {run}",
        "--output_dir {run}/../run/ is the --init_from model folder: training would overwrite the model it "
        "starts from; choose another --output_dir",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_INPUT)
def test_bad_input_exits_1_with_one_line(argv, expected, work, raw, cohort, trained, semantic_tokenizer):
    places = {
        "work": work,
        "run": trained,
        "cohort": cohort[0],
        "raw": raw[0],
        "semantic": semantic_tokenizer[0],
    }
    code, out, err = cli(argv.format(**places))
    command = argv.split()[0]
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"shark-hf {command}: error: ")
    assert expected.format(**places) in err


def test_train_counts_every_unknown_code_of_every_split_and_names_the_flags(work, cohort, semantic_tokenizer):
    codes = cohort_codes(load_from_disk(cohort[0]))
    missing = [code for code in codes if code not in CODES]
    shown = ", ".join(missing[:20]) + f", ... ({len(missing)} in all)"
    code, _, err = cli(
        f"train --cohort {cohort[0]} --tokenizer {semantic_tokenizer[0]} --output_dir {work}/r"
    )
    assert code == 1
    assert err == (
        f"shark-hf train: error: {len(missing)} of {len(codes)} codes of the cohort (train, validation, "
        f"test) not in the tokenizer: [{shown}] (--unknown skip drops them; --unknown embed encodes unseen "
        "codes)\n"
    )


def test_console_script_exit_codes(work, raw, trained):
    bad = console_script(f"predict --model {trained} --input {work}/malformed.json")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        f"shark-hf predict: error: {work / 'malformed.json'} is not valid JSON: "
        "Expecting ',' delimiter: line 1 column 11 (char 10)"
    ]


def _truncated_codebooks(tmp: Path, raw: Path, tokenizer: Path) -> tuple[str, str]:
    folder = Path(shutil.copytree(tokenizer, tmp / "tok"))
    (folder / "codebooks.safetensors").write_bytes((tokenizer / "codebooks.safetensors").read_bytes()[:50])
    return (
        f"inspect-tokenizer {folder}",
        f"{folder}/codebooks.safetensors is not a readable safetensors file (Error while deserializing "
        "header: invalid header length): the file is truncated or corrupted; save the tokenizer again or "
        "download it again",
    )


def _latin1_header(tmp: Path, raw: Path, tokenizer: Path) -> tuple[str, str]:
    folder = Path(shutil.copytree(raw, tmp / "raw"))
    text = (raw / "DIAGNOSES_ICD.csv").read_bytes()
    (folder / "DIAGNOSES_ICD.csv").write_bytes(text.replace(b"ICD9_CODE", b"ICD9_C\xf6DE", 1))
    return (
        f"build-dataset mimic3 --root {folder} --out {tmp}/c",
        f"{folder}/DIAGNOSES_ICD.csv: the header line is not UTF-8 text (byte 0xf6 at offset "
        f"{text.index(b'ICD9_CODE') + 6}): save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
    )


def _truncated_gzip(tmp: Path, raw: Path, tokenizer: Path) -> tuple[str, str]:
    folder = tmp / "raw"
    folder.mkdir()
    shutil.copy(raw / "ADMISSIONS.csv", folder)
    packed = gzip.compress((raw / "DIAGNOSES_ICD.csv").read_bytes(), mtime=0)
    (folder / "DIAGNOSES_ICD.csv.gz").write_bytes(packed[: len(packed) // 2])
    path = folder / "DIAGNOSES_ICD.csv.gz"
    return (
        f"build-dataset mimic3 --root {folder} --out {tmp}/c",
        f"{path}: the compressed file is truncated or damaged (Truncated compressed stream): download or "
        f"copy it again (`gzip -t {path}` checks it)",
    )


@pytest.mark.parametrize("damage", [_truncated_codebooks, _latin1_header, _truncated_gzip])
def test_damaged_files_give_one_line_naming_the_file(damage, tmp_path, raw, random_tokenizer):
    argv, message = damage(tmp_path, raw[0], random_tokenizer)
    code, out, err = cli(argv)
    assert code == 1 and out == ""
    assert err == f"shark-hf {argv.split()[0]}: error: {message}\n"


def test_verbose_shows_the_traceback(work):
    with pytest.raises(UserError, match="missing.json: no such file"):
        main(f"-v predict --model {work} --input {work}/missing.json".split())


def test_messages_are_one_line_and_bounded():
    assert _one_line(KeyError("code not in the tokenizer:\n ['ICD9CM:99999']")) == (
        "code not in the tokenizer: ['ICD9CM:99999']"
    )
    long = _one_line(ValueError("x" * (MAX_MESSAGE + 5)))
    assert long == "x" * MAX_MESSAGE + " ... (5 more characters)"


def test_every_flag_has_its_own_help_text():
    import argparse

    from shark_hf.cli import _parser

    subcommands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in subcommands.choices.items():
        flags = [a for a in parser._actions if a.option_strings and a.help is not argparse.SUPPRESS]
        assert [a.option_strings for a in flags if not a.help] == [], name
        helps = [a.help for a in flags]
        assert sorted({h for h in helps if helps.count(h) > 1}) == [], name
