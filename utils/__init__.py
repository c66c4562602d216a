"""Library code behind the top-level scripts: one concern per module."""
