# The reference JupyterHub config of Science Gateway.
#
# With nothing set this is the embedded default: local login (`admin`/`admin`; `demo`/`demo` too
# with SCIENCE_GATEWAY_DEMO_SECOND_USER=1), notebooks as local processes, JupyterLab, the bundled
# demo catalogue.
# Switch parts to production with site config files named in SCIENCE_GATEWAY_CONFIG
# (YAML in the {ClassName: {trait: value}} shape, or Python): see docs/configuration.md.
# With an OIDC login (docs/examples/checkin.yaml, cilogon.yaml) the users' Rucio catalogue uses
# each user's own access token: RucioCatalog.auth_type = "oidc" is the default, with no password
# anywhere; the Rucio server maps the token to the user's account (docs/catalog.md, "Users' own
# Rucio accounts").
from science_gateway.hub.config import build_config

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)
c.merge(build_config())
