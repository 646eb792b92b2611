"""The Kubernetes operator: Kopf handlers for InjectionCampaign and TrainingRun, and the objects they make.

Always import it as ``opsllm.operator`` (``operator`` is a stdlib module). Where things live:

- :mod:`opsllm.operator.settings`   the operator's settings (the Helm chart's values are generated from them)
- :mod:`opsllm.operator.kube`       the one Kubernetes client of the process, and idempotent create/delete
- :mod:`opsllm.operator.campaign`   InjectionCampaign handlers: plan, Injections, chaos objects, samples
- :mod:`opsllm.operator.boutique`   OnlineBoutique's Deployments and Services, from the project's templates
- :mod:`opsllm.operator.jobs`       Job, ConfigMap and PyTorchJob builders for TrainingRun stages
- :mod:`opsllm.operator.training`   TrainingRun handlers: one Job per stage, chained, mirrored into status
- :mod:`opsllm.operator.metrics`    the operator's own Prometheus metrics
- :mod:`opsllm.operator.run`        start-up: settings, login, handler registration, ``kopf.run``
"""
