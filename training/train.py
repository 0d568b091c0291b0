"""Train SHARK with Accelerate.

    python training/train.py --cohort COHORT_DIR --tokenizer TOKENIZER_DIR --output_dir runs/shark
    accelerate launch --config_file training/accelerate_cpu_ddp.yaml training/train.py ...

Every option: `python training/train.py --help`. The work is `shark_hf.training.train`.
"""

from shark_hf.training import main

if __name__ == "__main__":
    main()
