"""Post-training of ops LLMs: LoRA SFT, the domain process reward model, stage-gated GRPO with a curriculum.

The reward (:mod:`opsllm.training.rewards`) and the curriculum (:mod:`opsllm.training.curriculum`) are plain
Python; the trainers import torch, transformers, peft and trl (the ``train`` extra) only when they run.
"""
