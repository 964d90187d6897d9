"""genievm-dirvm: a GenieVM provider for a folder of raw disk images with JSON sidecars.

An example of a third-party plugin (docs/plugin-guide.md): the provider
``dirvm`` (``provider.py``), its changed-block source ``dirvm-blockhash``
(``cbt.py``), the hook implementations (``plugin.py``) and the contract
self-checks (``checks.py``) that ``genievm plugins --check`` runs.
"""
