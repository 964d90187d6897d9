"""GenieVM provider for VMware vSphere."""
