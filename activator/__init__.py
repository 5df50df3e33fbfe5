"""knpy activator."""
