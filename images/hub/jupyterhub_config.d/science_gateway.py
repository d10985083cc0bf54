# Loaded by Zero to JupyterHub's jupyterhub_config.py (exec'd with its `c`), after hub.config and
# before hub.extraConfig. The gateway's fixed pieces (its token scope, the user role, the servers'
# token scopes) and the files of $SCIENCE_GATEWAY_CONFIG (the chart mounts its gateway.yaml there),
# checked like the gateway's own jupyterhub_config.py does: a typo stops the hub with the key named.
from science_gateway.hub.config import kubernetes_config

c.merge(kubernetes_config())  # noqa: F821 (c is the chart's config object)
