"""The adapter: compiles API definitions into xDS resources for routers and enforcers."""

from wsgate_common.grpc_logs import quiet_core

quiet_core()  # before anything imports grpc: C-core lines are not in our log format
