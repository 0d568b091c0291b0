"""The attention picture: what each visit's label says, and that a PNG is written."""

from shark_hf.plots import _visit_label, plot_visit_attention


def test_visit_label_names_codes_with_short_descriptions_and_says_when_cut():
    assert _visit_label(0, ["ICD9CM:4019", "ICD9CM:25000"], 1) == "visit 1\n4019 Hypertension NOS\n+1 more"
    assert _visit_label(2, ["ICD9CM:4019"], 4) == "visit 3\n4019 Hypertension NOS"


def test_attention_plot_with_predictions_writes_a_png(tmp_path):
    path = plot_visit_attention(
        [0.25, 0.75],
        [["ICD9CM:4019"], ["ICD9CM:25000", "ICD9CM:4280"]],
        tmp_path / "a.png",
        "Patient p",
        predictions=[("Essential hypertension", 0.9), ("Diabetes mellitus without complication", 0.4)],
    )
    assert path == tmp_path / "a.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left behind
