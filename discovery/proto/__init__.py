"""Generated from registry.proto (grpcio-tools); the .proto ships with the package."""
