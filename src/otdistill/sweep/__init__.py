"""Sweeps: loss variants x seeds as one pipeline (`otdistill sweep`, `pipelines/sweep_pipeline.py`).

`config` reads a sweep config (a run config plus a `sweep:` section), `rows` turns it into the pipeline's
rows and each row's training config, `steps` are the sweep's own step functions (test data, evaluation of
one student, its registration), and `aggregate` builds the table, the intervals against the SFT row and the
plot that the last step writes to the parent MLflow run.
"""
