"""The data plane: WebSocket handshakes checked by the enforcer, then a byte splice."""

from wsgate_common.grpc_logs import quiet_core

quiet_core()  # before anything imports grpc: C-core lines are not in our log format
