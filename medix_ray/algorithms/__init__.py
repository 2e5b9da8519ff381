"""Group-based RL math (GRPO, DAPO, Dr. GRPO, GSPO): pure torch functions, shapes in the docstrings."""
