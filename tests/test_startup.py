"""Start-up: `import shark_hf` and the CLI's help load no framework (nor gradio, which only the web app
loads); the Auto classes still find SHARK models.

Each check runs in a fresh interpreter, since this test process has long imported torch and transformers.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import HfArgumentParser

import shark_hf
from shark_hf.cli import COMMANDS
from shark_hf.cli.model import training_flags_parser
from shark_hf.configuration_shark import SharkConfig
from shark_hf.modeling_shark import SharkForDiagnosisPrediction
from shark_hf.training_args import TrainingArguments

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("gradio", "torch", "transformers")


def run_python(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def loaded_frameworks(statement: str) -> list[str]:
    script = f"import sys\n{statement}\nprint(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    return json.loads(run_python(script).replace("'", '"'))


@pytest.mark.parametrize(
    "statement",
    [
        "import shark_hf",
        "import shark_hf.codes; shark_hf.codes.to_label('401.9')",
        "import shark_hf.metrics; shark_hf.metrics.precision_at_k([[0.9, 0.1]], [[1, 0]], 1)",
        "import shark_hf; shark_hf.UNIVERSAL_TOKENIZER; shark_hf.normalize_code('401.9')",
    ],
)
def test_import_loads_no_framework(statement):
    assert loaded_frameworks(statement) == []


def test_help_of_every_command_loads_no_framework():
    script = (
        "import contextlib, io, sys\n"
        "from shark_hf.cli import COMMANDS, main\n"
        "for argv in [['--help']] + [[name, '--help'] for name in COMMANDS]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "    assert 'usage: shark-hf' in out.getvalue(), argv\n"
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules), len(COMMANDS))\n"
    )
    assert run_python(script) == f"[] {len(COMMANDS)}"


def first(parser, attribute: str) -> dict:
    """dest -> `attribute` of the first action that sets dest (what argparse and the help show)."""
    values: dict = {}
    for action in parser._actions:
        values.setdefault(action.dest, getattr(action, attribute))
    return values


def test_train_help_lists_exactly_the_flags_hf_argument_parser_accepts():
    hf_parser = HfArgumentParser(TrainingArguments, add_help=False)
    help_parser = training_flags_parser()
    options = lambda parser: sorted(name for action in parser._actions for name in action.option_strings)  # noqa: E731
    assert options(help_parser) == options(hf_parser) and "--no_repeat_head" in options(help_parser)
    assert first(help_parser, "default") == first(hf_parser, "default")
    assert first(help_parser, "help") == first(hf_parser, "help")  # --no_X's repeated help is hidden


def test_lazy_names_resolve_to_their_modules():
    from shark_hf import data, embeddings, metrics, tokenization_shark

    assert shark_hf.SharkTokenizer is tokenization_shark.SharkTokenizer
    assert shark_hf.VisitCollator is data.VisitCollator and shark_hf.embed_codes is embeddings.embed_codes
    assert shark_hf.precision_at_k is metrics.precision_at_k
    assert set(shark_hf.__all__) <= set(dir(shark_hf))
    assert all(getattr(shark_hf, name) is not None for name in shark_hf.__all__)
    with pytest.raises(AttributeError, match="module 'shark_hf' has no attribute 'SharkModel'"):
        shark_hf.SharkModel  # noqa: B018


LOAD = """
import sys
{before}
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
model = AutoModel.from_pretrained(sys.argv[1])
classifier = AutoModelForSequenceClassification.from_pretrained(sys.argv[1])
config = AutoConfig.from_pretrained(sys.argv[1])
print(type(model).__module__, type(model).__name__, type(classifier).__name__, type(config).__name__)
"""


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    config = SharkConfig(num_levels=2, codebook_size=8, embed_dim=4, hidden_size=5, num_labels=3)
    SharkForDiagnosisPrediction(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "before",
    [
        "import shark_hf",  # transformers' Auto modules load after shark_hf
        "from transformers import AutoConfig\nimport shark_hf",  # AutoConfig before, AutoModel after
        "from transformers import AutoModel, pipeline\nimport shark_hf",  # both before
        "import shark_hf\nimport transformers.modeling_utils\nfrom transformers import pipeline",
    ],
    ids=["shark-first", "config-first", "auto-first", "modeling-utils-first"],
)
def test_auto_classes_load_a_shark_model_after_import_shark_hf(saved_model, before):
    loaded = run_python(LOAD.format(before=before), str(saved_model))
    expected = "shark_hf.modeling_shark SharkForDiagnosisPrediction SharkForDiagnosisPrediction SharkConfig"
    assert loaded == expected


def test_without_import_shark_hf_the_auto_classes_ask_for_remote_code(saved_model):
    script = LOAD.format(before="")
    command = [sys.executable, "-c", script, str(saved_model)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "trust_remote_code=True" in result.stderr
