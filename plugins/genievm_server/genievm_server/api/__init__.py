"""The REST API, one router per resource, all under ``/api/v1``."""
