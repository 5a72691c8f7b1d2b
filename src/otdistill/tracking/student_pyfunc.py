"""The models-from-code file MLflow stores with a logged student and runs to load it.

It holds no logic: the model is the installed otdistill's `otdistill.tracking.serving.StudentModel` (so no
pickled object is stored and nothing of the prompt or generation code is copied into the model).
"""

import mlflow

from otdistill.tracking.serving import StudentModel

mlflow.models.set_model(StudentModel())
