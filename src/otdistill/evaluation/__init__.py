"""Evaluation: batched greedy generation, pinned metrics (ROUGE, SQuAD EM/F1), reports and MLflow logging."""
