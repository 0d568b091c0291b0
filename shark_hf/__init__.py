"""shark-hf: SHARK semantic IDs for medical codes, as a Hugging Face package."""

__version__ = "0.1.0"
