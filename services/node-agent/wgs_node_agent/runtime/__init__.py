"""Container runtimes: Docker for real nodes, local processes for development without Docker."""
