"""Generated gRPC stubs for protos/structgen/v1/structgen.proto (scripts/gen_protos.sh; do not edit)."""
