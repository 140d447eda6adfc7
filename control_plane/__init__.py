"""The control plane: the publisher REST API, its database, and the push to the adapter."""

from wsgate_common.grpc_logs import quiet_core

quiet_core()  # before anything imports grpc: C-core lines are not in our log format
