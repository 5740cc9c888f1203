"""The REST API: starts runs and reads their state; it runs no agent itself."""
