"""The enforcer: answers the router's one question per WebSocket handshake and issues test keys."""

from wsgate_common.grpc_logs import quiet_core

quiet_core()  # before anything imports grpc: C-core lines are not in our log format
