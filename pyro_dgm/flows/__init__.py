"""Flow-based models: not built yet, see the flows issue."""
