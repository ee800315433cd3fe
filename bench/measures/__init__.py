"""One module per measure; each exposes ``async def measure(bench) -> list[Result]``."""
