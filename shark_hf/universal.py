"""`UNIVERSAL_TOKENIZER`: the folder of the SHARK tokenizer shipped with shark-hf.

It is fitted on every billable ICD-9-CM and ICD-10-CM code (`shark_hf.codes.all_codes`), so it lists no
cohort's codes, and every hospital that uses it gives each code the same IDs: models trained at different
sites read each other's inputs. Built by `SharkTokenizer.from_code_systems(("ICD9CM", "ICD10CM"))` with the
default embedding model (all-MiniLM-L6-v2, description text), L = 4, K = 128, seed 0;
`scripts/build_universal_tokenizer.py` rebuilds it. Load it with
`SharkTokenizer.from_pretrained(UNIVERSAL_TOKENIZER)`.
"""

from pathlib import Path

UNIVERSAL_TOKENIZER: str = str(Path(__file__).with_name("resources") / "universal_tokenizer")
"""Path of the shipped universal tokenizer folder (a plain `SharkTokenizer.from_pretrained` directory)."""

__all__ = ["UNIVERSAL_TOKENIZER"]
