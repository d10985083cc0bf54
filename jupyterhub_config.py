# The reference JupyterHub config of Science Gateway.
#
# With nothing set this is the embedded default: local login (`admin`/`admin`; `demo`/`demo` too
# with SCIENCE_GATEWAY_DEMO_SECOND_USER=1), notebooks as local processes, JupyterLab, the bundled
# demo catalogue.
# Switch parts to production with site config files named in SCIENCE_GATEWAY_CONFIG
# (YAML in the {ClassName: {trait: value}} shape, or Python): see docs/configuration.md.
from science_gateway.hub.config import build_config

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)
c.merge(build_config())
