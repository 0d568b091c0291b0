"""shark_hf.embeddings: code texts, embedding with MiniLM and a tiny Qwen3, the cache, the loaders."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from shark_hf import embeddings
from shark_hf.embeddings import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_ID,
    CodeEmbeddings,
    code_texts,
    embed_codes,
    last_token_pool,
    left_pad,
    load_embeddings,
    load_text_encoder,
    qwen3_prompt,
    resolve_model,
)

CODES = ["401.9", "E11.9", "042", "250.00"]
CANONICAL = ["ICD9CM:4019", "ICD10CM:E119", "ICD9CM:042", "ICD9CM:25000"]
HTN = "Unspecified essential hypertension"
HTN_HIERARCHY = (
    "Diseases of the circulatory system; Hypertensive disease; Essential hypertension; "
    "Unspecified essential hypertension"
)
HTN_SYNONYMS = ["Unspecified essential hypertension", "Hypertension NOS", "Essential hypertension"]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The offline all-MiniLM-L6-v2, loaded once for the module."""
    return load_text_encoder(device="cpu", cache_dir=tmp_path_factory.mktemp("hashes"))


def embed_one_by_one(encoder, texts: list[str]) -> torch.Tensor:
    return torch.cat([encoder.encode([text], batch_size=1) for text in texts])


# ----------------------------------------------------------------------------------------------------------
# Texts
# ----------------------------------------------------------------------------------------------------------


def test_code_texts_of_4019():
    assert code_texts(["401.9"], "description") == [[HTN]]
    assert code_texts(["ICD9CM:4019"], "hierarchy") == [[HTN_HIERARCHY]]
    # long, short, category name; the CCS name ("Essential hypertension") repeats the category and is dropped
    assert code_texts(["4019"], "synonyms") == [HTN_SYNONYMS]


def test_code_texts_synonyms_include_ccs_name():
    assert code_texts(["E11.9"], "synonyms") == [
        [
            "Type 2 diabetes mellitus without complications",
            "Type 2 diabetes mellitus",
            "Diabetes mellitus without complication",
        ]
    ]


def test_code_texts_unknown_strategy():
    with pytest.raises(ValueError, match="unknown text strategy 'names'"):
        code_texts(["401.9"], "names")


# ----------------------------------------------------------------------------------------------------------
# embed_codes with MiniLM
# ----------------------------------------------------------------------------------------------------------


def test_embed_codes_shapes_and_values(minilm, tmp_path):
    result = embed_codes(CODES, model=minilm, cache_dir=tmp_path, show_progress=False)
    assert result.codes == CANONICAL
    assert result.vectors.shape == (4, 384) and result.vectors.dtype == torch.float32
    assert (result.dim, len(result), result.model_id, result.text) == (
        384,
        4,
        DEFAULT_MODEL_ID,
        "description",
    )
    torch.testing.assert_close(result.vectors.norm(dim=1), torch.ones(4), atol=1e-6, rtol=0)
    direct = minilm.model.encode([HTN], convert_to_tensor=True)[0]
    torch.testing.assert_close(result.vectors[0], direct, atol=1e-6, rtol=0)


def test_embed_codes_is_deterministic(minilm, tmp_path):
    first = embed_codes(CODES, model=minilm, cache_dir=tmp_path / "a", show_progress=False)
    second = embed_codes(CODES, model=minilm, cache_dir=tmp_path / "b", batch_size=3, show_progress=False)
    torch.testing.assert_close(first.vectors, second.vectors, atol=1e-6, rtol=0)
    third = embed_codes(CODES, model=minilm, cache_dir=tmp_path / "a", show_progress=False)
    assert torch.equal(first.vectors, third.vectors)


def test_full_cache_hit_loads_no_model(minilm, tmp_path, monkeypatch):
    warm = embed_codes(CODES, model=minilm, cache_dir=tmp_path, show_progress=False)

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded on a full cache hit")

    monkeypatch.setattr(embeddings.TextEncoder, "__init__", no_loading)
    hit = embed_codes(CODES, cache_dir=tmp_path, show_progress=False)  # model=None: DEFAULT_MODEL by path
    assert hit.codes == warm.codes and torch.equal(hit.vectors, warm.vectors)
    assert hit.model_id == DEFAULT_MODEL_ID


def test_partial_cache_hit_embeds_only_missing_texts(minilm, tmp_path, monkeypatch):
    embed_codes(CODES[:2], model=minilm, cache_dir=tmp_path, show_progress=False)
    seen: list[str] = []
    encode = minilm.encode

    def spy(texts, *args, **kwargs):
        seen.extend(texts)
        return encode(texts, *args, **kwargs)

    monkeypatch.setattr(minilm, "encode", spy)
    merged = embed_codes(CODES, model=minilm, cache_dir=tmp_path, show_progress=False)
    assert seen == [
        "Human immunodeficiency virus [HIV] disease",
        "Diabetes mellitus without mention of complication, type II or unspecified type, "
        "not stated as uncontrolled",
    ]
    fresh = embed_codes(CODES, model=minilm, cache_dir=tmp_path / "fresh", show_progress=False)
    torch.testing.assert_close(merged.vectors, fresh.vectors, atol=1e-6, rtol=0)
    cache_files = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".safetensors")
    assert len(cache_files) == 1  # one file per model, rows merged


def test_fingerprint_ignores_path_and_mtime(tmp_path):
    copy = Path(shutil.copytree(DEFAULT_MODEL, tmp_path / "some" / "other-name"))
    reference = resolve_model(None, device="cpu", cache_dir=tmp_path / "cache")
    moved = resolve_model(copy, device="cpu", cache_dir=tmp_path / "cache")
    assert moved.weights == reference.weights and moved.fingerprint == reference.fingerprint
    assert moved.model_id == str(copy) and reference.model_id == DEFAULT_MODEL_ID
    os.utime(copy / "config.json", ns=(1, 1))
    assert (
        resolve_model(copy, device="cpu", cache_dir=tmp_path / "cache").fingerprint == reference.fingerprint
    )
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config | {"layer_norm_eps": 1e-6}))
    assert (
        resolve_model(copy, device="cpu", cache_dir=tmp_path / "cache").fingerprint != reference.fingerprint
    )


def test_synonyms_mean_pool_individual_vectors(minilm, tmp_path):
    raw = embed_codes(["401.9"], model=minilm, text="synonyms", cache_dir=tmp_path, normalize=False)
    individual = embed_one_by_one(minilm, HTN_SYNONYMS)
    torch.testing.assert_close(raw.vectors[0], individual.mean(dim=0), atol=1e-6, rtol=0)
    unit = embed_codes(["401.9"], model=minilm, text="synonyms", cache_dir=tmp_path, show_progress=False)
    expected = torch.nn.functional.normalize(individual.mean(dim=0), dim=0)
    torch.testing.assert_close(unit.vectors[0], expected, atol=1e-6, rtol=0)
    assert unit.text == "synonyms"


def test_hierarchy_embeds_the_joined_text(minilm, tmp_path):
    result = embed_codes(["401.9"], model=minilm, text="hierarchy", cache_dir=tmp_path, show_progress=False)
    torch.testing.assert_close(
        result.vectors[0], embed_one_by_one(minilm, [HTN_HIERARCHY])[0], atol=1e-6, rtol=0
    )


def test_embed_codes_errors(minilm, tmp_path):
    with pytest.raises(ValueError, match="duplicate codes passed to embed_codes: ICD9CM:4019"):
        embed_codes(["401.9", "ICD9CM:4019"], model=minilm, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="instruction is only used by Qwen3-Embedding"):
        embed_codes(["401.9"], instruction="Cluster diagnoses", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a model directory"):
        embed_codes(["401.9"], model=str(tmp_path / "missing"), cache_dir=tmp_path)


# ----------------------------------------------------------------------------------------------------------
# CodeEmbeddings
# ----------------------------------------------------------------------------------------------------------


def table() -> CodeEmbeddings:
    vectors = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    return CodeEmbeddings(["ICD9CM:4019", "ICD10CM:E119", "ICD9CM:042"], vectors, "m", "description")


def test_code_embeddings_select_and_validation():
    emb = table()
    picked = emb.select(["042", "ICD9CM:4019"])
    assert picked.codes == ["ICD9CM:042", "ICD9CM:4019"]
    assert picked.vectors.tolist() == [[3.0, 4.0], [1.0, 0.0]]
    with pytest.raises(KeyError, match="1 codes have no embedding: ICD9CM:4011"):
        emb.select(["401.1"])
    with pytest.raises(ValueError, match="2 codes but 1 vector rows"):
        CodeEmbeddings(["ICD9CM:4019", "ICD9CM:042"], torch.zeros(1, 2), "m", "t")
    with pytest.raises(ValueError, match="duplicate codes in CodeEmbeddings: ICD9CM:042"):
        CodeEmbeddings(["ICD9CM:042", "ICD9CM:4019", "ICD9CM:042"], torch.zeros(3, 2), "m", "t")
    with pytest.raises(ValueError, match=r"1 vectors have NaN or inf values: row 1 \(ICD9CM:042\)"):
        CodeEmbeddings(
            ["ICD9CM:4019", "ICD9CM:042"], torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), "m", "t"
        )
    with pytest.raises(ValueError, match=r"vectors must be 2-D \[N, D\], got shape \(3,\)"):
        CodeEmbeddings(["a", "b", "c"], torch.zeros(3), "m", "t")


def test_save_and_load_safetensors(tmp_path):
    emb = table()
    path = emb.save(tmp_path / "emb.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.safetensors"]  # no temporary file left
    loaded = load_embeddings(path)
    assert loaded.codes == emb.codes and torch.equal(loaded.vectors, emb.vectors)
    assert (loaded.model_id, loaded.text) == ("m", "description")
    save_file({"vectors": torch.zeros(1, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="other.safetensors was not written by CodeEmbeddings.save"):
        load_embeddings(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="key= selects a JSON embedding set or a parquet column"):
        load_embeddings(path, key="x")


# ----------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------


def test_load_npy(tmp_path):
    matrix = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float64)
    np.save(tmp_path / "vec.npy", matrix)
    with pytest.raises(FileNotFoundError, match="pass codes= or put the codes in one of"):
        load_embeddings(tmp_path / "vec.npy")
    (tmp_path / "vec.codes.txt").write_text("401.9\nE11.9\n")
    loaded = load_embeddings(tmp_path / "vec.npy")
    assert loaded.codes == ["ICD9CM:4019", "ICD10CM:E119"]
    assert loaded.vectors.tolist() == [[0.5, -1.0], [2.0, 0.25]] and loaded.vectors.dtype == torch.float32
    assert (loaded.model_id, loaded.text) == ("vec.npy", "external")
    assert load_embeddings(tmp_path / "vec.npy", codes=["042", "I10"]).codes == ["ICD9CM:042", "ICD10CM:I10"]
    np.save(tmp_path / "other.npy", matrix)
    (tmp_path / "other.codes.json").write_text(json.dumps(["ICD9CM:042", "I10"]))
    assert load_embeddings(tmp_path / "other.npy").codes == ["ICD9CM:042", "ICD10CM:I10"]
    with pytest.raises(ValueError, match="vec.npy: 3 codes but 2 vector rows"):
        load_embeddings(tmp_path / "vec.npy", codes=["042", "I10", "E11.9"])
    with pytest.raises(ValueError, match="vec.npy: row 1: '12' is not a valid"):
        load_embeddings(tmp_path / "vec.npy", codes=["042", "12"])


def test_load_npy_nan_names_code(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([[0.0, 1.0], [np.nan, 1.0]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"nan.npy: 1 vectors have NaN or inf values: row 1 \(ICD10CM:I10\)"):
        load_embeddings(tmp_path / "nan.npy", codes=["042", "I10"])


def test_load_parquet_list_and_numeric_columns(tmp_path):
    lists = pa.table({"code": ["401.9", "I10"], "embedding": [[1.0, 2.0], [3.0, 4.5]]})
    pq.write_table(lists, tmp_path / "lists.parquet")
    loaded = load_embeddings(tmp_path / "lists.parquet")
    assert loaded.codes == ["ICD9CM:4019", "ICD10CM:I10"] and loaded.vectors.tolist() == [
        [1.0, 2.0],
        [3.0, 4.5],
    ]
    numeric = pa.table({"code": ["401.9", "I10"], "x0": [1, 3], "x1": [2.0, 4.5], "x2": [0.0, -1.0]})
    pq.write_table(numeric, tmp_path / "numeric.parquet")
    assert load_embeddings(tmp_path / "numeric.parquet").vectors.tolist() == [
        [1.0, 2.0, 0.0],
        [3.0, 4.5, -1.0],
    ]
    fixed = pa.table(
        {"code": ["401.9", "I10"], "vector": pa.array([[1.0, 2.0], [3.0, 4.5]], pa.list_(pa.float32(), 2))}
    )
    pq.write_table(fixed, tmp_path / "fixed.parquet")
    assert load_embeddings(tmp_path / "fixed.parquet").vectors.tolist() == [[1.0, 2.0], [3.0, 4.5]]
    custom = pa.table({"code": ["401.9"], "emb_v2": [[0.5, 0.25]], "vector": [[9.0, 9.0]]})
    pq.write_table(custom, tmp_path / "custom.parquet")
    assert load_embeddings(tmp_path / "custom.parquet", key="emb_v2").vectors.tolist() == [[0.5, 0.25]]
    assert load_embeddings(tmp_path / "custom.parquet").vectors.tolist() == [[9.0, 9.0]]


def test_load_parquet_errors(tmp_path):
    ragged = pa.table({"code": ["401.9", "I10", "042"], "vector": [[1.0, 2.0], [3.0, 4.0], [5.0]]})
    pq.write_table(ragged, tmp_path / "ragged.parquet")
    with pytest.raises(
        ValueError, match=r"ragged.parquet: ragged dimensions: row 2 \(code '042'\) has 1 values"
    ):
        load_embeddings(tmp_path / "ragged.parquet")
    null = pa.table({"code": ["401.9", "I10"], "vector": [[1.0, 2.0], None]})
    pq.write_table(null, tmp_path / "null.parquet")
    with pytest.raises(ValueError, match=r"null.parquet: row 1 \(code 'I10'\) has missing values"):
        load_embeddings(tmp_path / "null.parquet")
    nan = pa.table({"code": ["401.9", "I10"], "vector": [[1.0, float("nan")], [3.0, 4.0]]})
    pq.write_table(nan, tmp_path / "nan.parquet")
    with pytest.raises(ValueError, match=r"nan.parquet: 1 vectors have NaN .*row 0 \(ICD9CM:4019\)"):
        load_embeddings(tmp_path / "nan.parquet")
    pq.write_table(pa.table({"icd": ["401.9"], "vector": [[1.0]]}), tmp_path / "nocode.parquet")
    with pytest.raises(
        ValueError, match=r"nocode.parquet: no 'code' column \(columns: \['icd', 'vector'\]\)"
    ):
        load_embeddings(tmp_path / "nocode.parquet")
    pq.write_table(pa.table({"code": ["401.9"], "x0": [1.0], "note": ["a"]}), tmp_path / "text.parquet")
    with pytest.raises(ValueError, match="text.parquet: column 'note' is string, expected numbers"):
        load_embeddings(tmp_path / "text.parquet")


def dryad_fixture(path: Path) -> Path:
    """A tiny embeddings.json in the Dryad layout: Word2Vec coordinates as strings, Med2Vec as numbers."""
    data = {
        "SG_CO_embeddings_3": {
            "E11.9": {"1": "0.5", "2": "-1.25", "3": "2"},
            "I10": {"3": "0.0", "1": "1e-3", "2": "-0.5"},
        },
        "SG_CO_cat_embeddings_3": {"END002": {"1": "1", "2": "2", "3": "3"}},
        "Med2Vec_embeddings_2": {"E119": {"1": -3.858267374185924e-48, "2": 0.75}, "J449": {"1": 1, "2": 2}},
    }
    path.write_text(json.dumps(data))
    return path


def test_load_dryad_json(tmp_path):
    path = dryad_fixture(tmp_path / "embeddings.json")
    sg = load_embeddings(path, key="SG_CO_embeddings_3")
    assert sg.codes == ["ICD10CM:E119", "ICD10CM:I10"]
    assert sg.vectors.tolist() == [[0.5, -1.25, 2.0], [np.float32(1e-3).item(), -0.5, 0.0]]
    assert (sg.model_id, sg.text) == ("embeddings.json#SG_CO_embeddings_3", "external")
    med2vec = load_embeddings(path, key="Med2Vec_embeddings_2")
    assert med2vec.codes == ["ICD10CM:E119", "ICD10CM:J449"]
    assert med2vec.vectors.tolist() == [[np.float32(-3.858267374185924e-48).item(), 0.75], [1.0, 2.0]]


def test_load_dryad_json_errors(tmp_path):
    path = dryad_fixture(tmp_path / "embeddings.json")
    sets = "['SG_CO_embeddings_3', 'Med2Vec_embeddings_2']"
    with pytest.raises(ValueError, match=re.escape(f"holds several embedding sets; pass key= one of {sets}")):
        load_embeddings(path)
    with pytest.raises(KeyError, match="has no embedding set 'CBOW_CO_embeddings_3'"):
        load_embeddings(path, key="CBOW_CO_embeddings_3")
    with pytest.raises(ValueError, match="'SG_CO_cat_embeddings_3' holds CCSR category embeddings"):
        load_embeddings(path, key="SG_CO_cat_embeddings_3")
    bad = {
        "ragged": {"SG_SEP_embeddings_2": {"E11.9": {"1": "1", "2": "2"}, "I10": {"1": "1"}}},
        "text": {"SG_SEP_embeddings_2": {"E11.9": {"1": "1", "2": "two"}}},
        "nan": {"SG_SEP_embeddings_2": {"E11.9": {"1": "1", "2": "2"}, "I10": {"1": "NaN", "2": "0"}}},
        "dup": {"SG_SEP_embeddings_2": {"E11.9": {"1": "1", "2": "2"}, "E119": {"1": "1", "2": "0"}}},
        "keys": {"SG_SEP_embeddings_2": {"E11.9": {"1": "1", "3": "2"}}},
    }
    messages = {
        "ragged": r"ragged dimensions: row 1 \(code 'I10'\) has 1 values, row 0 \(code 'E11.9'\) has 2",
        "text": "code 'E11.9' has a non-numeric coordinate",
        "nan": r"1 vectors have NaN or inf values: row 1 \(ICD10CM:I10\)",
        "dup": "duplicate codes \\(after normalisation\\): ICD10CM:E119",
        "keys": r"code 'E11.9' coordinate keys are not 1..2: \['1', '3'\]",
    }
    for name, data in bad.items():
        file = tmp_path / f"{name}.json"
        file.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=f"{name}.json: {messages[name]}"):
            load_embeddings(file)


def test_load_json_single_mapping_and_bad_inputs(tmp_path):
    (tmp_path / "flat.json").write_text(json.dumps({"401.9": [1, 2], "I10": [3, 4]}))
    flat = load_embeddings(tmp_path / "flat.json")
    assert flat.codes == ["ICD9CM:4019", "ICD10CM:I10"] and flat.vectors.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(FileNotFoundError, match="no embeddings file at"):
        load_embeddings(tmp_path / "absent.json")
    (tmp_path / "emb.csv").write_text("code,x\n")
    with pytest.raises(ValueError, match="unsupported embeddings format '.csv'"):
        load_embeddings(tmp_path / "emb.csv")
    with pytest.raises(ValueError, match="codes= is only used for .npy files"):
        load_embeddings(tmp_path / "flat.json", codes=["401.9"])


# ----------------------------------------------------------------------------------------------------------
# Qwen3-Embedding: pooling, prompt, and a tiny random Qwen3 saved offline
# ----------------------------------------------------------------------------------------------------------


def test_last_token_pool_left_and_right_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_pool(hidden, left).tolist() == [[9.0, 10.0, 11.0], [21.0, 22.0, 23.0]]
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    assert last_token_pool(hidden, right).tolist() == [[3.0, 4.0, 5.0], [18.0, 19.0, 20.0]]


def test_left_pad_and_prompt():
    input_ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert qwen3_prompt("Essential hypertension", "Group diagnoses") == (
        "Instruct: Group diagnoses\nQuery:Essential hypertension"
    )


def build_tiny_qwen3(directory: Path, eos_template: bool) -> Path:
    """A randomly initialised 2-layer Qwen3 with a byte-level tokenizer built offline, Qwen-style tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab |= {"<|endoftext|>": len(vocab), "<|im_end|>": len(vocab) + 1}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|endoftext|>", "<|im_end|>"])
    if eos_template:  # current Qwen3-Embedding tokenizers append <|endoftext|> themselves
        end = ("<|endoftext|>", vocab["<|endoftext|>"])
        tokenizer.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>", special_tokens=[end]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.save_pretrained(directory)
    config = Qwen3Config(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    Qwen3Model(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory) -> Path:
    return build_tiny_qwen3(tmp_path_factory.mktemp("models") / "Qwen3-Embedding-tiny", eos_template=True)


def qwen3_reference(directory: Path, texts: list[str], instruction: str) -> torch.Tensor:
    """One unpadded forward per text; the hidden state at its final <|endoftext|>; L2-normalised."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory, dtype=torch.float32).eval()
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    rows = []
    for text in texts:
        ids = tokenizer(qwen3_prompt(text, instruction))["input_ids"]
        ids = ids if ids[-1] == end else ids + [end]
        with torch.no_grad():
            rows.append(model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1])
    return torch.nn.functional.normalize(torch.stack(rows), dim=1)


def test_qwen3_embedding_last_token_left_padding(tiny_qwen3, tmp_path):
    result = embed_codes(CODES, model=tiny_qwen3, device="cpu", cache_dir=tmp_path, show_progress=False)
    assert result.codes == CANONICAL and result.vectors.shape == (4, 32)
    assert result.model_id == str(tiny_qwen3)
    texts = [t for [t] in code_texts(CODES, "description")]
    expected = qwen3_reference(tiny_qwen3, texts, embeddings.QWEN3_INSTRUCTION)
    torch.testing.assert_close(result.vectors, expected, atol=1e-5, rtol=0)
    ref = resolve_model(tiny_qwen3, device="cpu", cache_dir=tmp_path)
    assert (ref.backend, ref.dtype, ref.instruction) == (
        "qwen3-embedding",
        "float32",
        embeddings.QWEN3_INSTRUCTION,
    )


def test_qwen3_instruction_and_missing_eos_template(tiny_qwen3, tmp_path):
    plain = build_tiny_qwen3(tmp_path / "old-Qwen3-Embedding", eos_template=False)
    result = embed_codes(
        CODES[:2], model=plain, device="cpu", cache_dir=tmp_path / "c", instruction="Group diagnoses"
    )
    expected = qwen3_reference(
        tiny_qwen3, [HTN, "Type 2 diabetes mellitus without complications"], "Group diagnoses"
    )
    torch.testing.assert_close(result.vectors, expected, atol=1e-5, rtol=0)
    default = resolve_model(plain, device="cpu", cache_dir=tmp_path / "c")
    other = resolve_model(plain, device="cpu", instruction="Group diagnoses", cache_dir=tmp_path / "c")
    assert default.fingerprint != other.fingerprint  # the prompt is part of the cache key
