"""`training/train.py` and `shark_hf.training`: end to end, 2-process CPU DDP, exact resume, fine-tuning,
early stopping.

Every run trains on a tiny synthetic cohort (120 patients: 84 train, 12 validation, 24 test samples) with a
random-ID tokenizer, so a run takes a second or two; the expectations are exact (bit-identical weights,
equal metric dicts), not approximate.
"""

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import HfArgumentParser

from shark_hf import training
from shark_hf.baselines import BASELINES, evaluate_baselines, fit_baselines
from shark_hf.codes import label_names
from shark_hf.context_shrinkage import SCALES
from shark_hf.data.cohort import build_cohort
from shark_hf.data.collator import VisitCollator
from shark_hf.data.synthetic import write_synthetic_cohort
from shark_hf.evaluation import REPORT_KS, evaluate_model, split_metrics
from shark_hf.modeling_shark import SharkForDiagnosisPrediction
from shark_hf.privacy import bootstrap_auc_interval, membership_inference_auc, per_sample_loss
from shark_hf.tokenization_shark import SharkTokenizer
from shark_hf.training import label_frequency_bias, main
from shark_hf.training_args import TrainingArguments

REPO = Path(__file__).resolve().parents[1]
TRAIN_SIZE, BATCH_SIZE = 84, 16  # 6 batches per epoch: 5 of 16 and one of 4
EVAL_BATCH_SIZE = 8  # test split (24) = 3 full batches


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A tiny cohort in two label spaces (ccs, code) and two random-ID tokenizers."""
    datasets.disable_progress_bars()
    root = tmp_path_factory.mktemp("training")
    raw = write_synthetic_cohort(root / "raw", "mimic3", num_patients=120)
    cohorts = {}
    for space in ("ccs", "code"):
        cohorts[space] = build_cohort("mimic3", root=raw, label_space=space)
        cohorts[space].save_to_disk(root / f"cohort_{space}")
    codes = sorted({code for s in cohorts["ccs"].values() for p in s["visits"] for v in p for code in v})
    for seed in (0, 1):
        SharkTokenizer.random_ids(codes, codebook_size=32, seed=seed).save_pretrained(
            root / f"tokenizer_{seed}"
        )
    assert [len(cohorts["ccs"][s]) for s in ("train", "validation", "test")] == [TRAIN_SIZE, 12, 24]
    return SimpleNamespace(root=root, cohorts=cohorts, tokenizer=root / "tokenizer_0")


def flags(ws, output_dir, *extra, space="ccs", tokenizer=None):
    return [
        *("--cohort", str(ws.root / f"cohort_{space}"), "--label_space", space),
        *("--tokenizer", str(tokenizer or ws.tokenizer), "--output_dir", str(output_dir)),
        *("--num_epochs", "2", "--batch_size", str(BATCH_SIZE), "--eval_batch_size", str(EVAL_BATCH_SIZE)),
        *extra,
    ]


# The reference run: 2 epochs of 3 optimizer steps (6 batches, 2 per step), a checkpoint every 2 steps:
# checkpoint_0 = step 2 (epoch 1, batch 4), checkpoint_1 = step 4 (epoch 2, batch 2), checkpoint_2 = step 6
# (end of epoch 2).
CHECKPOINTING = ("--gradient_accumulation_steps", "2", "--checkpoint_steps", "2", "--checkpoint_limit", "10")


@pytest.fixture(scope="module")
def reference(ws):
    output_dir = ws.root / "reference"
    results = main(flags(ws, output_dir, *CHECKPOINTING))
    return SimpleNamespace(dir=output_dir, results=results)


def read_json(path):
    return json.loads(Path(path).read_text())


def read_log(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "log.jsonl").read_text().splitlines()]


def assert_same_weights(a, b):
    a, b = load_file(a), load_file(b)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_train_end_to_end(ws, reference):
    out, results = reference.dir, reference.results
    metrics = read_json(out / "metrics.json")
    assert metrics == json.loads(json.dumps(results))
    assert (metrics["epochs"], metrics["num_processes"]) == (2, 1)

    # The saved model and tokenizer reload and reproduce the logged metrics exactly.
    model = SharkForDiagnosisPrediction.from_pretrained(out)
    tokenizer = SharkTokenizer.from_pretrained(out / "tokenizer")
    assert tokenizer.fingerprint == SharkTokenizer.from_pretrained(ws.tokenizer).fingerprint
    model.check_tokenizer(tokenizer)
    for split in ("test", "validation"):
        assert (
            evaluate_model(model, tokenizer, ws.cohorts["ccs"][split], batch_size=EVAL_BATCH_SIZE)
            == (metrics[split])
        )
    test = metrics["test"]
    assert test["num_samples"] + test["num_excluded_empty"] == 24
    assert {f"{m}@{k}" for m in ("P", "Acc", "R") for k in REPORT_KS} <= test.keys()

    log = read_log(out)
    assert [(r["epoch"], r["step"]) for r in log] == [(1, 3), (2, 6)]
    assert all(0 < r["train_loss"] < 1 and 0 < r["validation_loss"] < 1 for r in log)
    best = log[metrics["best_epoch"] - 1]
    assert best["validation_P@10"] == max(r["validation_P@10"] for r in log)
    assert metrics["best_epoch_at_cap"] == (metrics["best_epoch"] == 2)
    assert_shrinkage_on_the_best_epoch(metrics, best)

    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    privacy = metrics["privacy"]
    assert 0.0 <= privacy["membership_inference_auc"] <= 1.0
    assert (privacy["members"], privacy["nonmembers"]) == (TRAIN_SIZE, 24)


def test_membership_audit_is_per_sample_with_a_patient_bootstrap_interval(ws, reference):
    """metrics.json's audit is recomputed here from the saved model: per-sample losses of the 84 training
    and 24 test samples, the AUC and the bootstrap interval over patients (seeded with --seed)."""
    cohort = ws.cohorts["ccs"]
    model = SharkForDiagnosisPrediction.from_pretrained(reference.dir).eval()
    tokenizer = SharkTokenizer.from_pretrained(reference.dir / "tokenizer")
    collator = VisitCollator.for_model(tokenizer, model.config)

    def losses(split):
        rows = split.select_columns(["visits", "labels"]).to_list()
        parts = []
        for start in range(0, len(rows), EVAL_BATCH_SIZE):  # the run's evaluation batches
            batch = collator(rows[start : start + EVAL_BATCH_SIZE])
            with torch.no_grad():
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            parts.append(per_sample_loss(logits, batch["labels"]))
        return torch.cat(parts)

    members, nonmembers = losses(cohort["train"]), losses(cohort["test"])
    patients = {name: list(cohort[name]["patient_id"]) for name in ("train", "test")}
    low, high = bootstrap_auc_interval(members, nonmembers, patients["train"], patients["test"], seed=0)
    assert read_json(reference.dir / "metrics.json")["privacy"] == {
        "attack": "per-sample loss threshold",
        "membership_inference_auc": membership_inference_auc(members, nonmembers),
        "auc_95ci": [low, high],
        "bootstrap": {"resamples": 1000, "unit": "patient", "seed": 0},
        "members": TRAIN_SIZE,
        "nonmembers": 24,
        "member_patients": len(set(patients["train"])),
        "nonmember_patients": len(set(patients["test"])),
    }
    assert low <= membership_inference_auc(members, nonmembers) <= high


def test_metrics_json_records_the_cohort_task_patients_and_samples(ws, reference, tmp_path):
    assert read_json(reference.dir / "metrics.json")["cohort"] == {
        "task": {"source": "mimic3", "label_space": "ccs", "min_visits": 2, "sample": "last", "seed": 0},
        "patients": {"train": TRAIN_SIZE, "validation": 12, "test": 24},  # one sample per patient
        "samples": {"train": TRAIN_SIZE, "validation": 12, "test": 24},
    }
    # all_prefixes: several samples per patient, counted apart from the patients.
    prefixes = build_cohort("mimic3", root=ws.root / "raw", sample="all_prefixes")
    prefixes.save_to_disk(tmp_path / "cohort")
    output = tmp_path / "run"
    argv = flags(ws, output, "--num_epochs", "1")
    argv[argv.index("--cohort") + 1] = str(tmp_path / "cohort")
    main(argv)
    recorded = read_json(output / "metrics.json")["cohort"]
    assert recorded["task"]["sample"] == "all_prefixes"
    assert recorded["patients"] == {"train": TRAIN_SIZE, "validation": 12, "test": 24}
    assert recorded["samples"] == {name: len(prefixes[name]) for name in ("train", "validation", "test")}
    assert recorded["samples"]["train"] > TRAIN_SIZE


def test_metrics_json_carries_the_heuristics_and_the_lift_over_the_best(ws, reference):
    metrics = read_json(reference.dir / "metrics.json")
    cohort = ws.cohorts["ccs"]
    fitted = fit_baselines(cohort["train"], cohort["validation"], label_names("ccs"), "ccs")
    expected = evaluate_baselines(fitted, cohort, ("validation", "test"), ks=REPORT_KS)
    assert metrics["baselines"] == json.loads(json.dumps(expected["baselines"]))
    best = metrics["best_baseline"]
    assert best == expected["best_baseline"] in BASELINES
    lift = metrics["lift_over_best_baseline"]
    assert lift["P@10"] == metrics["test"]["P@10"] - metrics["baselines"][best]["test"]["P@10"]
    assert {f"{m}@{k}" for m in ("P", "Acc", "R") for k in REPORT_KS} == lift.keys()
    assert metrics["labels_outside_label_space"] == {"validation": 0, "test": 0}


def test_metrics_rank_on_logits_not_on_saturated_probabilities():
    # sigmoid(20) and sigmoid(30) are both 1.0 in float32: probabilities would tie and rank label 0 first.
    logits = torch.tensor([[20.0, 30.0, -5.0]])
    assert torch.sigmoid(logits)[0, 0] == torch.sigmoid(logits)[0, 1] == 1.0
    metrics = split_metrics(logits, torch.tensor([[0.0, 1.0, 0.0]]), loss=0.0)
    assert (metrics["P@5"], metrics["micro_auc"]) == (1.0, 1.0)
    assert metrics["micro_f1"] == 2 / 3  # logits >= 0 (probability >= 0.5): labels 0 and 1 predicted


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command, timeout, **env):
    """Run `command` in its own process group; kill the whole group if it outlives `timeout` seconds."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{command[:4]} did not finish in {timeout} s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]
    return output


def test_two_process_cpu_ddp_matches_single_process_evaluation(ws, tmp_path):
    out = tmp_path / "ddp"
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    launcher = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port"]
    output = _run(
        [
            *accelerate,
            *launcher,
            str(_free_port()),
            "training/train.py",
            *flags(ws, out, "--num_epochs", "1"),
        ],
        timeout=300,
        ACCELERATE_USE_CPU="true",
        OMP_NUM_THREADS="1",
    )
    assert "2 process(es)" in output
    metrics = read_json(out / "metrics.json")
    assert metrics["num_processes"] == 2
    # 3 test batches of 8 over 2 processes: process 1 also gets a padding batch, which gather_for_metrics
    # drops. Every real sample is then scored in the very batch a single process scores it in, so the
    # single-process evaluation of the saved weights reproduces the metrics exactly.
    test = metrics["test"]
    assert test["num_samples"] + test["num_excluded_empty"] == len(ws.cohorts["ccs"]["test"])
    model = SharkForDiagnosisPrediction.from_pretrained(out)
    tokenizer = SharkTokenizer.from_pretrained(out / "tokenizer")
    assert evaluate_model(model, tokenizer, ws.cohorts["ccs"]["test"], batch_size=EVAL_BATCH_SIZE) == test
    validation = metrics["validation"]
    assert validation["num_samples"] + validation["num_excluded_empty"] == 12
    assert (metrics["privacy"]["members"], metrics["privacy"]["nonmembers"]) == (TRAIN_SIZE, 24)
    # Each process trained on half of every epoch: 6 batches of 16 -> 3 steps per process.
    assert [r["step"] for r in read_log(out)] == [3]


def _checkpoint_state(folder):
    state = read_json(folder / "trainer_state.json")
    del state["args"]
    return state


def _assert_same_run(a, b):
    """Same best model, final training weights, history, trainer state and metrics."""
    assert_same_weights(a / "model.safetensors", b / "model.safetensors")
    last = a / "checkpoints" / "checkpoint_2"
    assert_same_weights(last / "model.safetensors", b / "checkpoints" / "checkpoint_2" / "model.safetensors")
    assert _checkpoint_state(last) == _checkpoint_state(b / "checkpoints" / "checkpoint_2")
    assert read_log(a) == read_log(b)
    metrics_a, metrics_b = read_json(a / "metrics.json"), read_json(b / "metrics.json")
    for key in ("best_epoch", "epochs", "validation", "test", "privacy"):
        assert metrics_a[key] == metrics_b[key], key


def test_resume_mid_epoch_into_new_folder_is_exact(ws, reference, tmp_path):
    checkpoint = reference.dir / "checkpoints" / "checkpoint_1"
    assert (_checkpoint_state(checkpoint)["epoch"], _checkpoint_state(checkpoint)["step_in_epoch"]) == (1, 2)
    out = tmp_path / "resumed"
    main(flags(ws, out, *CHECKPOINTING, "--resume_from_checkpoint", str(checkpoint)))
    # load_state does not advance the checkpoint counter; the run continues it after checkpoint_1.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_2"]
    _assert_same_run(reference.dir, out)


def test_resume_latest_after_interruption_in_same_folder(ws, reference, tmp_path):
    """An interrupted run's folder: newer outputs than its latest checkpoint are replaced, not trusted."""
    out = tmp_path / "interrupted"
    shutil.copytree(reference.dir, out)
    shutil.rmtree(out / "checkpoints" / "checkpoint_2")
    (out / "metrics.json").unlink()
    (out / "log.jsonl").write_text('{"epoch": 99}\n')
    first = (out / "checkpoints" / "checkpoint_0" / "model.safetensors").read_bytes()
    main(flags(ws, out, *CHECKPOINTING, "--resume_from_checkpoint", "latest"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"checkpoint_{i}" for i in range(3)]
    assert (out / "checkpoints" / "checkpoint_0" / "model.safetensors").read_bytes() == first
    _assert_same_run(reference.dir, out)


def test_resume_at_end_of_epoch(ws, reference, tmp_path):
    """checkpoint_2 was written after the last batch of epoch 2, before its validation."""
    checkpoint = reference.dir / "checkpoints" / "checkpoint_2"
    assert _checkpoint_state(checkpoint)["step_in_epoch"] == TRAIN_SIZE // BATCH_SIZE + 1
    out = tmp_path / "resumed"
    main(flags(ws, out, *CHECKPOINTING, "--resume_from_checkpoint", str(checkpoint)))
    shutil.copytree(checkpoint, out / "checkpoints" / "checkpoint_2")  # no step left: nothing new was saved
    _assert_same_run(reference.dir, out)


def test_fine_tune_with_new_label_space_reinitialises_head(ws, reference, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="shark_hf.training")
    out = tmp_path / "code"
    # Learning rate 0: the saved model is the initial one, whose body is the pretrained model's.
    main(
        flags(
            ws,
            out,
            "--init_from",
            str(reference.dir),
            "--learning_rate",
            "0",
            "--num_epochs",
            "1",
            space="code",
        )
    )
    labels = sorted({x for labels in ws.cohorts["code"]["train"]["labels"] for x in labels})  # train only
    everywhere = {x for s in ws.cohorts["code"].values() for labels in s["labels"] for x in labels}
    assert len(everywhere) > len(labels)  # validation and test hold labels never seen in training
    message = (
        f"Label space changed from ccs (283 labels) to code ({len(labels)} labels): "
        "the prediction head is re-initialised"
    )
    assert message in caplog.messages
    model = SharkForDiagnosisPrediction.from_pretrained(out)
    assert model.config.label_space == "code"
    assert [model.config.id2label[i] for i in range(model.config.num_labels)] == labels
    pretrained, tuned = load_file(reference.dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert pretrained.keys() == tuned.keys()
    for key in pretrained:
        if key.startswith("classifier."):
            assert tuned[key].shape[0] == len(labels)
        elif key == "history.label_weight":  # the repeat path's per-label weights start again at 0
            assert torch.equal(tuned[key], torch.zeros(len(labels), 4))
        else:
            assert torch.equal(pretrained[key], tuned[key]), key
    names = dict.fromkeys(labels)
    assert torch.equal(tuned["classifier.bias"], label_frequency_bias(ws.cohorts["code"]["train"], names))


def test_code_label_space_evaluates_without_labels_unseen_in_training(ws, tmp_path):
    results = main(flags(ws, tmp_path / "code", "--num_epochs", "1", space="code"))
    train_labels = {x for labels in ws.cohorts["code"]["train"]["labels"] for x in labels}
    for split in ("validation", "test"):
        unseen = sum(x not in train_labels for labels in ws.cohorts["code"][split]["labels"] for x in labels)
        assert results["labels_outside_label_space"][split] == unseen > 0
    model = SharkForDiagnosisPrediction.from_pretrained(tmp_path / "code")
    tokenizer = SharkTokenizer.from_pretrained(tmp_path / "code" / "tokenizer")
    test = evaluate_model(model, tokenizer, ws.cohorts["code"]["test"], batch_size=EVAL_BATCH_SIZE)
    assert test == results["test"]


def test_learned_table_zeroes_codes_unseen_in_training(ws, tmp_path):
    cohort = ws.cohorts["ccs"]
    codes = {s: {c for p in cohort[s]["visits"] for v in p for c in v} for s in cohort}
    unseen = sorted((codes["validation"] | codes["test"]) - codes["train"])
    assert unseen
    index = SharkTokenizer.index(sorted(codes["train"] | set(unseen)))
    index.save_pretrained(tmp_path / "index")
    main(flags(ws, tmp_path / "retain", "--num_epochs", "1", tokenizer=tmp_path / "index"))
    table = load_file(tmp_path / "retain" / "model.safetensors")["code_embeddings.weight"]
    rows = {code: int(index.ids[i, 0]) for i, code in enumerate(index.codes)}
    assert torch.count_nonzero(table[[rows[c] for c in unseen]]) == 0  # the unknown-code vector, kept
    assert bool((table[[rows[c] for c in sorted(codes["train"])]] != 0).any(dim=1).all())


def test_fine_tune_with_same_labels_keeps_head(ws, reference, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="shark_hf.training")
    out = tmp_path / "same"
    main(flags(ws, out, "--init_from", str(reference.dir), "--learning_rate", "0", "--num_epochs", "1"))
    assert "Same 283 ccs labels: the prediction head is kept" in caplog.messages
    assert_same_weights(reference.dir / "model.safetensors", out / "model.safetensors")


def test_fine_tune_checks_the_tokenizer(ws, reference, tmp_path):
    other = ws.root / "tokenizer_1"
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        main(flags(ws, tmp_path / "x", "--init_from", str(reference.dir), tokenizer=other))


def test_unknown_codes_of_every_split_are_counted_before_the_model_is_built(ws, tmp_path, monkeypatch):
    codes = sorted({code for s in ws.cohorts["ccs"].values() for p in s["visits"] for v in p for code in v})
    known = codes[: len(codes) // 2]
    SharkTokenizer.random_ids(known, codebook_size=32, seed=0).save_pretrained(tmp_path / "half")
    missing = codes[len(codes) // 2 :]

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the codes were checked")

    monkeypatch.setattr(training, "build_model", no_model)
    expected = (
        f"{len(missing)} of {len(codes)} codes of the cohort (train, validation, test) not in the tokenizer: "
        f"[{', '.join(missing[:20])}, ... ({len(missing)} in all)] (unknown='skip' drops them; add_codes or "
        "unknown='embed' encodes unseen codes)"
    )
    with pytest.raises(KeyError) as caught:
        main(flags(ws, tmp_path / "x", tokenizer=tmp_path / "half"))
    assert caught.value.args[0] == expected


def test_unknown_skip_trains_on_the_known_codes(ws, tmp_path, caplog):
    codes = sorted({code for s in ws.cohorts["ccs"].values() for p in s["visits"] for v in p for code in v})
    SharkTokenizer.random_ids(codes[1:], codebook_size=32, seed=0).save_pretrained(tmp_path / "most")
    with caplog.at_level(logging.WARNING, logger="shark_hf"):
        results = main(flags(ws, tmp_path / "x", "--unknown", "skip", tokenizer=tmp_path / "most"))
    assert (
        f"1 of {len(codes)} codes of the cohort (train, validation, test) are not in the tokenizer "
        f"(dropped): {codes[0]}"
    ) in caplog.text
    assert results["test"]["num_samples"] + results["test"]["num_excluded_empty"] == 24


def test_unknown_must_be_a_policy(ws, tmp_path):
    with pytest.raises(
        ValueError, match=re.escape("--unknown must be one of ('error', 'skip', 'embed'), got 'drop'")
    ):
        main(flags(ws, tmp_path / "x", "--unknown", "drop"))


def test_early_stopping_keeps_the_best_epoch(ws, tmp_path):
    out = tmp_path / "early"
    patience = 2
    results = main(
        flags(ws, out, "--learning_rate", "0.05", "--num_epochs", "12", "--patience", str(patience))
    )
    log = read_log(out)
    scores = [r["validation_P@10"] for r in log]
    best_epoch = scores.index(max(scores)) + 1
    assert results["best_epoch"] == best_epoch
    assert len(log) == best_epoch + patience < 12  # stopped early, `patience` epochs after the best
    assert results["best_epoch_at_cap"] is False
    # The saved model is the best epoch's (then shrunk): factor 1 scores that epoch's validation P@10 exactly.
    assert_shrinkage_on_the_best_epoch(results, log[best_epoch - 1])


def assert_shrinkage_on_the_best_epoch(metrics, best_record):
    """The context shrinkage ran on the best epoch's model: factor 1 is that model, the chosen factor has the
    highest validation P@10 (the earliest of ties) and is the saved model's; with factor 1 the saved model's
    validation metrics are the best epoch's, exactly."""
    tried = {float(k): v for k, v in metrics["context_scale_validation"].items()}
    assert list(tried) == list(SCALES)
    assert tried[1.0] == best_record["validation_P@10"]
    scale = metrics["context_logit_scale"]
    assert scale == next(s for s in SCALES if tried[s] == max(tried.values()))
    assert metrics["validation"]["P@10"] == tried[scale]
    if scale == 1.0:
        assert {k: best_record[f"validation_{k}"] for k in metrics["validation"]} == metrics["validation"]


@pytest.mark.parametrize("flag", ["--no_context_shrinkage", "--no_repeat_head"])
def test_no_context_shrinkage_keeps_the_best_epoch_weights(ws, tmp_path, flag):
    out = tmp_path / "no_shrinkage"
    results = main(flags(ws, out, "--learning_rate", "0.05", flag))
    assert "context_logit_scale" not in results and "context_scale_validation" not in results
    best = read_log(out)[results["best_epoch"] - 1]
    assert {k: best[f"validation_{k}"] for k in results["validation"]} == results["validation"]


# ------------------------------------------------------------------ checkpoints written whole, output folder


class Killed(BaseException):
    """Stands for a kill: not an Exception, so nothing in the training code handles it."""


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_kill_during_a_checkpoint_save_resumes_from_the_last_complete_one(
    ws, reference, tmp_path, monkeypatch
):
    """With --checkpoint_limit 1, a run killed while writing checkpoint_1 still has checkpoint_0 (the old one
    is deleted only once the new one is complete); `latest` resumes from it and ends bit for bit as the
    uninterrupted reference run."""
    import shark_hf.training as training

    out = tmp_path / "killed"
    argv = flags(ws, out, "--gradient_accumulation_steps", "2", "--checkpoint_steps", "2")
    write_json = training._write_json

    def killed_while_saving_checkpoint_1(path, content):
        if path.name == "trainer_state.json" and "checkpoint_1" in path.parent.name:
            raise Killed  # after save_state wrote weights, optimizer and RNGs, before the trainer state
        write_json(path, content)

    monkeypatch.setattr(training, "_write_json", killed_while_saving_checkpoint_1)
    with pytest.raises(Killed):
        main([*argv, "--checkpoint_limit", "1"])
    monkeypatch.setattr(training, "_write_json", write_json)
    assert sorted(os.listdir(out / "checkpoints")) == [".checkpoint_1.tmp", "checkpoint_0"]
    assert not (out / ".shark-train.lock").exists()  # released on the way out
    (out / ".shark-train.lock").write_text(f"{_dead_pid()}\n")  # as a real kill would leave it

    main([*argv, "--checkpoint_limit", "1", "--resume_from_checkpoint", "latest"])
    assert sorted(os.listdir(out / "checkpoints")) == ["checkpoint_2"]
    assert not (out / ".shark-train.lock").exists()
    _assert_same_run(reference.dir, out)


def test_latest_skips_an_incomplete_checkpoint(ws, reference, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="shark_hf.training")
    out = tmp_path / "incomplete"
    shutil.copytree(reference.dir, out)
    (out / "checkpoints" / "checkpoint_2" / "trainer_state.json").unlink()  # killed mid-save (old layout)
    (out / "metrics.json").unlink()
    main(flags(ws, out, *CHECKPOINTING, "--resume_from_checkpoint", "latest"))
    assert f"{out / 'checkpoints' / 'checkpoint_2'} is incomplete (no trainer_state.json): skipped" in (
        caplog.messages
    )
    assert f"Resumed from {out / 'checkpoints' / 'checkpoint_1'} at epoch 2, batch 2" in caplog.messages
    _assert_same_run(reference.dir, out)  # checkpoint_2 rewritten whole


def test_used_output_folder_is_refused(ws, reference, tmp_path):
    out = tmp_path / "used"
    shutil.copytree(reference.dir, out)
    log = (out / "log.jsonl").read_text()
    with pytest.raises(ValueError) as error:
        main(flags(ws, out))
    assert str(error.value) == (
        f"--output_dir {out} already holds a training run (config.json, metrics.json, log.jsonl, "
        "checkpoints): pass --resume_from_checkpoint latest to continue it, or --overwrite_output_dir to "
        "replace it"
    )
    assert (out / "log.jsonl").read_text() == log
    assert not (out / ".shark-train.lock").exists()


def test_overwrite_output_dir_starts_afresh(ws, reference, tmp_path):
    """The previous run's log is truncated, its checkpoints, metrics and model card deleted."""
    out = tmp_path / "overwritten"
    shutil.copytree(reference.dir, out)
    (out / "log.jsonl").write_text('{"epoch": 99}\n')
    (out / "README.md").write_text("the card of the previous run\n")
    main(flags(ws, out, "--num_epochs", "1", "--overwrite_output_dir"))
    assert [r["epoch"] for r in read_log(out)] == [1]
    assert not (out / "checkpoints").exists()
    assert not (out / "README.md").exists()
    assert read_json(out / "metrics.json")["epochs"] == 1
    assert not (out / ".shark-train.lock").exists()


def test_a_folder_locked_by_a_running_training_is_refused(ws, tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".shark-train.lock").write_text(f"{other.pid}\n")
        with pytest.raises(FileExistsError) as error:
            main(flags(ws, out))
    finally:
        other.kill()
        other.wait()
    assert str(error.value) == (
        f"--output_dir {out} is in use by another training (process {other.pid}, lock file "
        f"{out / '.shark-train.lock'}); wait for it to end, or use another --output_dir"
    )
    assert (out / ".shark-train.lock").read_text() == f"{other.pid}\n"  # not the refused run's to remove
    assert sorted(os.listdir(out)) == [".shark-train.lock"]


def test_a_lock_left_by_a_dead_process_is_taken_over(ws, tmp_path, caplog):
    out = tmp_path / "stale"
    out.mkdir()
    dead = _dead_pid()
    (out / ".shark-train.lock").write_text(f"{dead}\n")
    main(flags(ws, out, "--num_epochs", "1"))
    assert f"Taking over {out / '.shark-train.lock'}: its process {dead} is not running" in caplog.messages
    assert not (out / ".shark-train.lock").exists()
    assert [r["epoch"] for r in read_log(out)] == [1]


def test_output_dir_equal_to_init_from_is_refused(ws, reference):
    same = reference.dir.parent / "." / reference.dir.name
    before = (reference.dir / "model.safetensors").read_bytes()
    with pytest.raises(ValueError) as error:
        main(flags(ws, same, "--init_from", str(reference.dir), "--overwrite_output_dir"))
    assert str(error.value) == (
        f"--output_dir {same} is the --init_from model folder: training would overwrite the model it starts "
        "from; choose another --output_dir"
    )
    assert (reference.dir / "model.safetensors").read_bytes() == before


def test_two_process_run_refuses_a_locked_folder_on_every_process(ws, tmp_path):
    """Only the main process takes the lock; the others raise its error instead of waiting for it."""
    out = tmp_path / "ddp_locked"
    out.mkdir()
    (out / ".shark-train.lock").write_text(f"{os.getpid()}\n")  # this test process: alive
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    launcher = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port"]
    process = subprocess.run(
        [*accelerate, *launcher, str(_free_port()), "training/train.py", *flags(ws, out)],
        cwd=REPO,
        env={**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode != 0
    message = f"FileExistsError: --output_dir {out} is in use by another training (process {os.getpid()}"
    assert process.stderr.count(message) == 2, process.stderr[-4000:]  # rank 0 and rank 1
    assert sorted(os.listdir(out)) == [".shark-train.lock"]


def test_transformers_training_argument_names_are_accepted():
    argv = "--output_dir o --cohort c --num_train_epochs 7 --per_device_train_batch_size 8 "
    argv += "--per_device_eval_batch_size 9 --early_stopping_patience 2 --save_steps 5 --save_total_limit 1 "
    argv += "--dataloader_num_workers 0 --learning_rate 0.5 --overwrite_output_dir"
    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(argv.split())
    assert (args.num_epochs, args.batch_size, args.eval_batch_size, args.patience) == (7, 8, 9, 2)
    assert (args.checkpoint_steps, args.checkpoint_limit, args.num_workers) == (5, 1, 0)
    assert (args.learning_rate, args.overwrite_output_dir) == (0.5, True)
