"""Small process-level helpers shared by the command line and benchmarks."""
