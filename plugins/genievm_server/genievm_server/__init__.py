"""GenieVM server."""
