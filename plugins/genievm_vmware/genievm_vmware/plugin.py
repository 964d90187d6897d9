"""Entry point ``vmware``: registers the vSphere provider (issue 5, being built)."""
