"""Developer and operator tooling for Confab (CLI, code generation, benchmarks)."""
