"""Mail transport adapters."""
