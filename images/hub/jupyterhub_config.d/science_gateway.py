# Loaded by Zero to JupyterHub's jupyterhub_config.py (exec'd with its `c`), after hub.config and
# before hub.extraConfig. Merges the gateway's fixed pieces (its token scope, the user role, the
# servers' token scopes), its Kubernetes spawner and the files of $SCIENCE_GATEWAY_CONFIG (the
# chart mounts its gateway.yaml there), checked at start-up: a typo stops the hub with the key
# named. merge_hub_config keeps the chart's own roles and scopes (its services') beside ours.
from science_gateway.hub.config import kubernetes_config, merge_hub_config

merge_hub_config(c, kubernetes_config())  # noqa: F821 (c: the chart's config object)
