"""`structgen regress`: run a golden set through a real server, record every output with the model/engine
fingerprint (run), and say what changed between two runs with paired statistics (compare)."""
