"""Business rules between the routers (pydantic) and the tables (SQLAlchemy).

Services take a Session and, where a change reaches gateways, a ``push.Gateway``; they raise
``errors.ApiError`` for anything the caller did wrong.
"""
