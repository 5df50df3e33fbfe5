"""knpy autoscaler."""
