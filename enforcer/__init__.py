"""The enforcer: answers the router's one question per WebSocket handshake and issues test keys."""
