"""The gRPC edge: transport only (conversion, services, call guards, health, metrics, server)."""
