"""otdistill: cross-tokenizer knowledge distillation with the MultiLevelOT loss, as an MLOps pipeline."""

__version__ = "0.1.0"
