"""Protocol Buffers definitions and generated gRPC modules for Confab."""
