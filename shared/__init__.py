"""Code that two or more knpy components use."""
