"""The data plane: WebSocket handshakes checked by the enforcer, then a byte splice."""
