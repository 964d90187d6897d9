"""Entry point ``aws`` in the group ``genievm``: the ``aws`` provider (EC2, EBS direct) and its CBT source."""

from __future__ import annotations

from genievm_aws.cbt_source import EBS_CHANGED_BLOCKS
from genievm_core.plugin import CBTSourceRegistry, ProviderRegistry, hookimpl

GENIEVM_PLUGIN_API = 1  # the core's plugin API this plugin is built for (genievm_core.plugin.PLUGIN_API)


@hookimpl
def genievm_register_providers(registry: ProviderRegistry) -> None:
    from genievm_aws.provider import AWSProvider  # boto3 is imported only when the provider is used

    registry.add("aws", AWSProvider)


@hookimpl
def genievm_register_cbt_sources(registry: CBTSourceRegistry) -> None:
    registry.add(EBS_CHANGED_BLOCKS)
