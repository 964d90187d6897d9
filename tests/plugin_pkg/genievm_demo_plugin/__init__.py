"""A GenieVM test plugin: the ``demo`` provider serves VMs whose disks are generated, not stored."""
