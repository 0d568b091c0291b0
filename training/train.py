"""Train SHARK with Accelerate.

    python training/train.py --cohort COHORT_DIR --tokenizer TOKENIZER_DIR --output_dir runs/shark
    accelerate launch --config_file training/accelerate_cpu_ddp.yaml training/train.py ...

Every option: `python training/train.py --help`. The work is `shark_hf.training.train`.
"""

import logging
import sys

from transformers import HfArgumentParser

from shark_hf.training import TrainingArguments, train


def main(argv: list[str] | None = None) -> dict:
    """Parse `--flags` into `TrainingArguments` and train."""
    parser = HfArgumentParser(TrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return train(args)


if __name__ == "__main__":
    main(sys.argv[1:])
