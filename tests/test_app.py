"""The web app (`shark_hf.app`): reading the visits text, the outputs, the `/predict` API through
`gradio_client`, `shark-hf app`, and the page in a real headless Chromium (Playwright driving Debian's
`chromium`; `make test` installs it, and this test is never skipped)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from shark_hf.app import MAX_TOP_K, PatientInputError, SharkApp
from shark_hf.codes import all_codes, cohort_codes
from shark_hf.data.cohort import build_cohort
from shark_hf.data.synthetic import write_synthetic_cohort
from shark_hf.tokenization_shark import SharkTokenizer
from shark_hf.training import TrainingArguments, train

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PATIENT = "401.9, 250.00\n414.01, 428.0"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A SHARK model trained for 2 epochs on 60 patients of the built-in synthetic cohort, over a random-ID
    tokenizer of every ICD-9-CM code (so that the app's synthetic example patients are all known)."""
    root = tmp_path_factory.mktemp("app")
    cohort = build_cohort(
        "mimic3", root=write_synthetic_cohort(root / "raw", num_patients=60, seed=1), seed=1
    )
    cohort.save_to_disk(str(root / "cohort"))
    assert set(cohort_codes(cohort)) <= set(all_codes("ICD9CM"))
    SharkTokenizer.random_ids(all_codes("ICD9CM"), num_levels=2, codebook_size=128).save_pretrained(
        root / "tokenizer"
    )
    torch.set_num_threads(1)
    args = TrainingArguments(
        output_dir=str(root / "model"),
        cohort=str(root / "cohort"),
        tokenizer=str(root / "tokenizer"),
        num_epochs=2,
        batch_size=16,
        seed=0,
    )
    train(args)
    return root / "model"


@pytest.fixture(scope="module")
def app(model_dir) -> SharkApp:
    return SharkApp.load(model_dir)


# ------------------------------------------------------------------------------------------------ input


def test_visits_text_is_read_in_any_spelling(app):
    text = "\n 401.9 , ICD9CM:25000,\nicd9cm//41401\n"  # a trailing comma and blank lines are ignored
    assert app.parse_visits(text) == [["ICD9CM:4019", "ICD9CM:25000"], ["ICD9CM:41401"]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Enter at least one visit: one line per visit, oldest first, codes separated by commas"),
        ("401.9\n\n428.0", "Visit 2 is empty: give each visit at least one code, or remove the blank line."),
        ("401.9\n , ,", "Visit 2 is empty"),
        ("401.9\n428.0, XYZ.1", "Visit 2: 'XYZ.1' is not a valid ICD-9-CM or ICD-10-CM code"),
        (
            "401.9\nI10",
            "Visit 2: 'I10' (ICD10CM:I10) is not one of the 14567 codes this model knows; use the code",
        ),
    ],
)
def test_bad_visits_text_is_one_message_naming_the_visit(app, text, message):
    with pytest.raises(PatientInputError) as error:
        app.parse_visits(text)
    assert str(error.value).startswith(message)


def test_top_k_outside_its_range_is_refused(app):
    with pytest.raises(PatientInputError, match=f"top-k must be a whole number from 1 to {MAX_TOP_K}, got 0"):
        app.predict(PATIENT, 0)


# ---------------------------------------------------------------------------------------------- outputs


def test_predict_is_the_pipeline_on_the_normalized_visits(app):
    result = app.predict(PATIENT, 4)
    expected = app.predictor(
        [["ICD9CM:4019", "ICD9CM:25000"], ["ICD9CM:41401", "ICD9CM:4280"]],
        top_k=4,
        return_visit_attention=True,
    )
    assert result["labels"] == expected["labels"] and len(result["labels"]) == 4
    assert result["visit_attention"] == expected["visit_attention"]
    assert sum(result["visit_attention"]) == pytest.approx(1.0, abs=1e-6)


def test_answer_gives_named_probabilities_an_attention_table_and_a_figure(app):
    labels, table, figure, raw = app.answer(PATIENT, 3)
    top = raw["labels"]
    assert list(labels) == [f"{t['name']} (CCS {t['label']})" for t in top]
    assert list(labels.values()) == [t["score"] for t in top]
    alpha = raw["visit_attention"]
    assert table.splitlines()[2] == (
        f"| 1 | {alpha[0]:.3f} | `401.9` Unspecified essential hypertension<br>"
        "`250.00` Diabetes mellitus without mention of complication, type II or unspecified type, not stated "
        "as uncontrolled |"
    )
    assert raw["visits"] == [["401.9", "250.00"], ["414.01", "428.0"]]
    assert len(figure.axes) == 2 and figure.axes[1].get_title() == "top predictions for the next visit"


def test_code_search_matches_codes_and_description_words(app):
    assert app.search_codes("401.") == [
        ["401.0", "Malignant essential hypertension"],
        ["401.1", "Benign essential hypertension"],
        ["401.9", "Unspecified essential hypertension"],
    ]
    rows = app.search_codes("CONGESTIVE heart")
    assert ["428.0", "Congestive heart failure, unspecified"] in rows
    assert all("congestive" in d.lower() and "heart" in d.lower() for _, d in rows)
    assert app.search_codes("  ") == [] and app.search_codes("no such words at all") == []


def test_headline_shows_the_cards_test_metrics_beside_the_best_baseline(app, model_dir):
    metrics = json.loads((model_dir / "metrics.json").read_text())
    best = metrics["best_baseline"]
    lines = app.headline().splitlines()
    assert lines[0] == "| | P@10 | P@20 | Acc@10 | Acc@20 |"
    assert (
        lines[2]
        == "| this model (test split) | "
        + " | ".join(f"{metrics['test'][k]:.4f}" for k in ("P@10", "P@20", "Acc@10", "Acc@20"))
        + " |"
    )
    assert lines[3].startswith(f"| heuristic baseline: {best} (best on validation) | ")
    assert f"{metrics['baselines'][best]['test']['P@10']:.4f}" in lines[3]


def test_examples_are_synthetic_patients_the_model_knows(app):
    examples = app.examples()
    assert len(examples) == 3
    for text in examples:
        visits = app.parse_visits(text)  # every code is known
        assert len(visits) >= 2 and all(1 <= len(visit) <= 5 for visit in visits)


# ------------------------------------------------------------------------------- the served page and API


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(command: list[str], port: int, **popen) -> Iterator[str]:
    """Run `command` (a web server on `port`) until its page answers; yield its URL; stop it."""
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while not _serves(url):
            if server.poll() is not None:
                pytest.fail(f"{command} exited with {server.returncode}: {server.stdout.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{command} did not serve its page within 240 s")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def served(model_dir):
    """`shark-hf app --model DIR --port P` as a subprocess of the console script; stopped at the end."""
    port = free_port()
    script = str(Path(sys.executable).with_name("shark-hf"))
    with serving(
        [script, "app", "--model", str(model_dir), "--port", str(port), "--host", "127.0.0.1"], port
    ) as url:
        yield url


def _serves(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def test_app_command_names_a_folder_that_is_no_model(tmp_path, capsys):
    from shark_hf.cli import main

    assert main(["app", "--model", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err == f"shark-hf app: error: {tmp_path / 'nowhere'}: no such model folder\n"
    assert main(["app", "--model", str(tmp_path)]) == 1
    assert "is not a model folder (no config.json)" in capsys.readouterr().err


def test_gradio_client_gets_an_answer_from_predict(served, app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    with urllib.request.urlopen(served + "config", timeout=30) as response:
        config = json.load(response)
    assert config["analytics_enabled"] is False and config["run_history"] is False  # nothing typed is kept
    client = Client(served, verbose=False)
    assert "/predict" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    labels, table, _, raw = client.predict(PATIENT, 3, api_name="/predict")
    expected = app.predict(PATIENT, 3)
    names = [f"{t['name']} (CCS {t['label']})" for t in expected["labels"]]
    assert [c["label"] for c in labels["confidences"]] == names
    scores = [c["confidence"] for c in labels["confidences"]]
    assert scores == pytest.approx([t["score"] for t in expected["labels"]])
    assert raw["visit_attention"] == pytest.approx(expected["visit_attention"])
    assert table.splitlines()[0] == "| visit | attention (alpha) | codes |"
    with pytest.raises(AppError, match=r"Visit 2: 'XYZ.1' is not a valid ICD-9-CM or ICD-10-CM code"):
        client.predict("401.9\n428.0, XYZ.1", 3, api_name="/predict")


def test_page_in_chromium_predicts_shows_attention_and_errors(served, app, tmp_path):
    """Headless Chromium types a patient, clicks Predict, reads the top category and the attention, then
    types a malformed code and reads the one error message; the page's screenshot is saved in tmp_path."""
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).is_file(), "chromium is missing: apt-get install -y chromium (make test does)"
    expected = app.predict(PATIENT, 5)
    top = expected["labels"][0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(served)
            example = app.examples()[0]
            page.get_by_text(" | ".join(example.splitlines()), exact=True).click()
            expect(page.locator("#visits textarea")).to_have_value(example, timeout=30_000)
            page.locator("#visits textarea").fill(PATIENT)
            page.locator("#predict").click()
            labels = page.locator("#labels")
            expect(labels).to_contain_text(f"{top['name']} (CCS {top['label']})", timeout=60_000)
            attention = page.locator("#attention")
            expect(attention).to_contain_text("Unspecified essential hypertension", timeout=30_000)
            rows = attention.locator("tbody tr")
            expect(rows).to_have_count(2)
            alpha = [float(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(2)]
            assert alpha == pytest.approx(expected["visit_attention"], abs=5e-4)
            assert "428.0 Congestive heart failure, unspecified" in rows.nth(1).inner_text()
            page.locator("#search input, #search textarea").first.fill("congestive heart")
            results = page.locator("#search-results")
            expect(results).to_contain_text("398.91", timeout=30_000)
            results.get_by_test_id("cell-0-0").click()  # a click on a result adds its code to the last visit
            expect(page.locator("#visits textarea")).to_have_value(PATIENT + ", 398.91", timeout=30_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)

            page.locator("#visits textarea").fill("401.9\n428.0, XYZ.1")
            page.locator("#predict").click()
            message = page.get_by_text("Visit 2: 'XYZ.1' is not a valid ICD-9-CM or ICD-10-CM code")
            expect(message).to_be_visible(timeout=30_000)
            assert "Traceback" not in page.content()
            page.screenshot(path=str(tmp_path / "app_error.png"))  # the viewport, where the toast is
        finally:
            browser.close()
    assert (tmp_path / "app.png").stat().st_size > 10_000


# -------------------------------------------------------------------------------------------- the Space


def test_push_space_publishes_the_app_that_serves_the_model(model_dir, app, local_hub, tmp_path, capsys):
    """`shark-hf push --space` to the local Hub; the downloaded Space's app.py serves the same answers."""
    from gradio_client import Client
    from huggingface_hub import snapshot_download

    from shark_hf.cli import main

    assert (
        main(["push", "--model", str(model_dir), "--space", "org/shark-app", "--license", "apache-2.0"]) == 0
    )
    assert "Pushed" in capsys.readouterr().out
    assert local_hub.hub.repos["spaces/org/shark-app"].sdk == "gradio"
    space = Path(snapshot_download("org/shark-app", repo_type="space", local_dir=tmp_path / "space"))
    published = sorted(p.relative_to(space).as_posix() for p in space.rglob("*") if ".cache" not in p.parts)
    assert {"app.py", "requirements.txt", "README.md", "model/config.json", "model/model.safetensors"} <= set(
        published
    )
    assert {"model/metrics.json", "model/README.md", "model/tokenizer/tokenizer_config.json"} <= set(
        published
    )
    assert (space / "requirements.txt").read_text() == "shark-hf==0.1.0\n"
    card = (space / "README.md").read_text()
    assert "\nsdk: gradio\n" in card and "\napp_file: app.py\n" in card and "\nlicense: apache-2.0\n" in card
    assert main(["push", "--model", str(model_dir), "--space", "org/x", "--revision", "v2"]) == 1
    assert "--revision and --no-gating apply to --repo only" in capsys.readouterr().err

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port)}
    with serving([sys.executable, "app.py"], port, cwd=space, env=env) as url:
        labels, *_ = Client(url, verbose=False).predict(PATIENT, 3, api_name="/predict")
    expected = app.predict(PATIENT, 3)["labels"]
    assert [c["confidence"] for c in labels["confidences"]] == pytest.approx([t["score"] for t in expected])
