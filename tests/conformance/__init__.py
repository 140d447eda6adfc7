"""Autobahn conformance comparison: direct to the echo backend vs through wsgate.

- ``runner``: runs Autobahn cases with kosoku in a child process, returns :class:`CaseRecord`s;
- ``compare``: pairs the two runs case by case and says what differs;
- ``expectations``: the case selection and every case allowed to differ, each with its reason;
- ``ConformanceEcho-1.0.0/``: the API project the gateway run goes through (unsecured topic).
"""
