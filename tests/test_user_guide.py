"""The job config shown in docs/user-guide.md validates, and its table names every BackupConfig field."""

from __future__ import annotations

import json
import re
from pathlib import Path

from genievm_core.models.config import BackupConfig

GUIDE = (Path(__file__).parents[1] / "docs" / "user-guide.md").read_text()


def test_example_job_config_validates() -> None:
    block = re.search(r"```json\n(.*?)```", GUIDE, re.S)
    assert block
    config = BackupConfig.model_validate(json.loads(block.group(1)))
    assert config.excluded_disks == ("vdc",)


def test_every_backup_config_field_is_in_the_table() -> None:
    for name, field in BackupConfig.model_fields.items():
        assert f"`{field.alias or name}`" in GUIDE, name
