"""Code that runs in the JupyterHub process: authenticators, group policy, hub-side config."""
