"""`structgen bench`: masks, coverage, serve (and engine) benchmarks, with peers measured side by side."""
