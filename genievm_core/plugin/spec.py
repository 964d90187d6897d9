"""The hooks a GenieVM plugin may implement: the plugin author's reference.

Every hook receives a registry object and registers into it; none returns a
value. Hooks fire once per run, when the ``PluginHost`` is created, in this
order: storage, providers, CBT sources, verifiers, self-checks.
"""

from __future__ import annotations

import pluggy

from genievm_core.plugin.registry import (
    CBTSourceRegistry,
    ProviderRegistry,
    SelfCheckRegistry,
    StorageRegistry,
    VerifierRegistry,
)

__all__ = [
    "genievm_register_cbt_sources",
    "genievm_register_providers",
    "genievm_register_self_checks",
    "genievm_register_storage",
    "genievm_register_verifiers",
    "hookspec",
]

hookspec = pluggy.HookspecMarker("genievm")


@hookspec
def genievm_register_storage(registry: StorageRegistry) -> None:
    """Register storage targets by URL scheme.

    :param registry: call ``registry.add(scheme, factory)`` where
        ``factory(url, options)`` returns a ``StorageTarget`` for a repository
        URL such as ``file:///srv/backups`` or ``s3://bucket/prefix``.
        ``options`` are the storage options: a job config's ``storageOptions``,
        ``GENIEVM_STORAGE_OPTIONS`` (JSON) and ``--storage-option KEY=VALUE``
        (whose values arrive as strings); check them and raise ``ConfigError``.

    A target implements ``put`` (atomic), ``get``, ``exists``, ``list`` and
    ``delete``; raise ``StorageFullError``, ``StoragePermissionError``,
    ``ObjectNotFoundError`` or ``ObjectLockedError`` where they apply,
    ``StorageError`` otherwise. ``genievm_core.testing.StorageContract`` holds
    the tests every target must pass.

    Since 0.1.
    """


@hookspec
def genievm_register_providers(registry: ProviderRegistry) -> None:
    """Register hypervisor providers by name.

    :param registry: call ``registry.add(name, factory)`` where
        ``factory(options)`` connects and returns a ``Provider``; ``options``
        holds ``providerOptions`` from the job config (URI, host, user, ...).

    A provider lists and describes VMs, opens a point in time for backup as a
    context manager that always removes its snapshot or backup job on exit,
    yields one ``DiskSource`` per disk, and creates VMs for restore.

    Since 0.1.
    """


@hookspec
def genievm_register_cbt_sources(registry: CBTSourceRegistry) -> None:
    """Register changed-block tracking sources.

    :param registry: call ``registry.add(source)``; ``source.name`` keys it (and is
        recorded in manifests as ``cbt.source``), ``source.priority`` orders it.

    For each disk of a backup the core chooses one source among all installed
    plugins': the highest ``priority`` whose ``supports(disk)`` is true, where a
    source the disk source offers bound to the backup's point in time
    (``OffersCBTSources``, ``BoundCBTSource``) takes the place of the registered
    one of its name. It calls ``changed_extents(disk, parent_token)``; "not
    available" or a ``CBTError`` makes the disk a hash compare, with the reason
    in the manifest. A disk no source supports is answered by its disk source.
    ``genievm_core.testing.CBTSourceContract`` holds the tests every source must pass.

    Since 0.1. Since 0.2 the core makes this choice (before, only a provider's own
    code called its sources) and disk sources may offer bound sources.
    """


@hookspec
def genievm_register_verifiers(registry: VerifierRegistry) -> None:
    """Register backup verifiers.

    :param registry: call ``registry.add(verifier)``; ``verifier.verify(repository,
        manifest)`` returns a ``VerifyReport`` naming every problem found.
        ``repository`` is a ``RepositoryReader`` (``chunk_size``,
        ``disk_index``, ``has_chunk``, ``get_chunk``): rely on nothing else of
        it. The core registers ``manifest`` (indexes load and match their
        checksums), ``chunks`` (every referenced chunk exists) and ``data``
        (every chunk is read, decrypted and its id checked).

    Since 0.1; ``repository`` is typed ``RepositoryReader`` since 0.2.
    """


@hookspec
def genievm_register_self_checks(registry: SelfCheckRegistry) -> None:
    """Register contract self-checks, which ``genievm plugins --check`` runs for operators.

    :param registry: call ``registry.add(name, tests)`` where ``tests`` is an
        importable module of pytest test classes (``my_plugin.checks``, or one
        class: ``my_plugin.checks::TestMyProvider``), usually subclasses of the
        contract suites in ``genievm_core.testing`` with fixtures that build
        what they test in a temporary folder. They run in a separate pytest
        process, with pytest's own plugins off and only GenieVM's fixtures;
        they must not touch hypervisors or shared storage, and should take
        seconds. The plugin's own tests may import the same classes.

    Optional: a plugin without self-checks is listed as having none.

    Since 0.1.
    """
