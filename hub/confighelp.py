"""``science-gateway-config --help-all``: every setting Science Gateway ships, with its help text.

``jupyterhub --help-all`` lists only the classes JupyterHub knows (its own, and the authenticators
and spawners installed as entry points): not the resource policy, the Dask presets or the queue
poller. ``jupyter server --help-all`` lists none of a server extension's classes. This command
lists every configurable class of the installed ``science_gateway`` package, found by walking the
package (so a new class cannot be forgotten), each with all its settings, in two parts: the hub's
site config, and the users' Jupyter servers (``GatewayExtension`` and the catalogue backends).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys

from traitlets.config import Configurable

#: the package whose classes run in each user's Jupyter server, not in the hub
SERVER_PACKAGE = "science_gateway.jupyter_ext"


def shipped_classes(on_missing_extra=None) -> dict[str, type]:
    """``module.Class`` -> class for every Configurable with settings that science_gateway defines.

    A module whose optional extra is not installed cannot be imported: ``on_missing_extra(name,
    error)`` is called for it (default: raise the ImportError).
    """
    import science_gateway

    found = {}
    for info in pkgutil.walk_packages(science_gateway.__path__, "science_gateway."):
        try:
            module = importlib.import_module(info.name)
        except ImportError as e:
            if on_missing_extra is None:
                raise
            on_missing_extra(info.name, e)
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Configurable) and cls.__module__ == module.__name__:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return dict(sorted(found.items()))


def runs_in_server(cls: type) -> bool:
    return cls.__module__.startswith(SERVER_PACKAGE + ".")


def help_all(classes: dict[str, type]) -> str:
    """traitlets' own ``--help-all`` text of each class, under where its settings are read."""
    parts = []
    for title, in_server in (
        ("Hub settings (the site config of jupyterhub_config.py: $SCIENCE_GATEWAY_CONFIG)", False),
        ("Server settings (each user's Jupyter server: a jupyter_server_config file or Spawner.args)", True),
    ):
        parts += [title, "=" * len(title), ""]
        for cls in classes.values():
            if runs_in_server(cls) == in_server and cls.class_traits(config=True):
                parts.append(cls.class_get_help())
    return "\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="science-gateway-config",
        description="Show the settings of every configurable class Science Gateway ships.",
    )
    parser.add_argument("--help-all", action="store_true",
                        help="every class with all its settings and their help text")
    parser.add_argument("--classes", action="store_true", help="only the class names, one a line")
    args = parser.parse_args(argv)
    classes = shipped_classes()
    if args.classes:
        sys.stdout.write("".join(f"{name}\n" for name in classes))
    elif args.help_all:
        sys.stdout.write(help_all(classes) + "\n")
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
