"""Everything MLflow: the client, the run of a pipeline, the training callback, the registry, the pyfunc.

``client`` (the MLflow client on the configured store; tracking never kills work), ``run``
(``PipelineTracker``: one MLflow run per pipeline run, written by several tasks), ``callback``
(metrics from the training loop, buffered by ``buffer``), ``plots`` (the loss-curve PNG),
``registry`` (versions, champion/challenger aliases), ``pyfunc`` and ``pyfunc_entry`` (the
registered model as ``mlflow.pyfunc``). Nothing is imported here: ``import lmcore.tracking``
does not load MLflow.
"""
