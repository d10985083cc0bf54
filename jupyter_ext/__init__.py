"""Code that runs in each user's Jupyter server and kernel: the REST API, catalogue backends."""


def _jupyter_server_extension_points():
    from .app import GatewayExtension

    return [{"module": "science_gateway.jupyter_ext", "app": GatewayExtension}]
