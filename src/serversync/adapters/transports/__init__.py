"""Mail transport adapters."""

__all__: list[str] = []
