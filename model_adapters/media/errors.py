"""The one error for media bytes that do not decode (HTTP adapters turn it into `MalformedResponse`)."""


class MediaError(ValueError):
    """Media bytes that do not decode (converted to MalformedResponse by adapters)."""
