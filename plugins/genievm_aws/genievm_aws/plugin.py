"""Entry point ``aws`` in the group ``genievm``: the ``aws`` provider (EC2, EBS direct) and its CBT source."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genievm_aws.cbt_source import EBS_CHANGED_BLOCKS
from genievm_aws.options import AWSOptions
from genievm_core.plugin import CBTSourceRegistry, ProviderRegistry, hookimpl
from genievm_core.plugin.protocols import Provider

GENIEVM_PLUGIN_API = 1  # the core's plugin API this plugin is built for (genievm_core.plugin.PLUGIN_API)


class AWSProviderFactory:
    """Makes the ``aws`` provider; boto3 (about 0.2 s to import) is imported only when one is made."""

    options_model = AWSOptions

    def __call__(self, options: Mapping[str, Any]) -> Provider:
        from genievm_aws.provider import AWSProvider

        return AWSProvider(options)


@hookimpl
def genievm_register_providers(registry: ProviderRegistry) -> None:
    registry.add("aws", AWSProviderFactory())


@hookimpl
def genievm_register_cbt_sources(registry: CBTSourceRegistry) -> None:
    registry.add(EBS_CHANGED_BLOCKS)
