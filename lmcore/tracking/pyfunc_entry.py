"""MLflow "models from code" entry: the file ``log_model`` stores instead of a pickled object.

Why: a pickled ``PythonModel`` runs arbitrary code on load and breaks when
the class moves; MLflow 3 recommends logging a small script that builds the
model. This is that script; lmcore itself ships beside it (``code_paths``).
"""

from mlflow.models import set_model

from lmcore.tracking.pyfunc import LmcoreTextGenerator

set_model(LmcoreTextGenerator())
