"""Core features registered as plugins, the same way third-party plugins are."""
