"""The pure core every part of Science Gateway imports, and which imports none of them.

- :mod:`.policy`: the group resource policy and its typed :class:`~.policy.ResourceRequest`.
- :mod:`.presets`: the admin's Dask presets and what one user may use of them.
- :mod:`.catalog`: catalogue models (datasets, files, stage-in requests), the DID grammar and the
  one catalogue error family.
- :mod:`.commands`: :func:`~.commands.run_command`, the one way to run a program.
- :mod:`.sockets`: who owns a TCP socket on this node (the uid column of `/proc/net/tcp{,6}`).
- :mod:`.names`, :mod:`.text`, :mod:`.clock`, :mod:`.typed`: names, formatting, time, and typed
  objects built from the dicts an admin writes.
- :mod:`.logs`: log lines of the libraries under us without their secrets.

Nothing here does I/O at import, talks to a hub, a scheduler or a catalogue, or imports
``science_gateway.hub``, ``.spawners``, ``.jupyter_ext`` or the notebook API (a test checks it).
"""

__version__ = "0.1.0"
