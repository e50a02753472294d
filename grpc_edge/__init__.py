"""The gRPC edge: transport only (conversion, services, interceptors, server)."""
