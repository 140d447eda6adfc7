"""The compiled relay core (router._core): C sources under router/_core, libc + CPython only.

Everything else about the package is in pyproject.toml; setuptools reads both.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "router._core",
            sources=[
                "router/_core/module.c",
                "router/_core/core.c",
                "router/_core/scan.c",
                "router/_core/quota.c",
                "router/_core/plan.c",
            ],
            depends=["router/_core/scan.h", "router/_core/quota.h", "router/_core/plan.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            libraries=["m"],
        )
    ],
)
