"""Loopback stand-ins for the Telegram Bot API and the Kubernetes API.

They behave like the real servers, strictly (unknown fields, bad entities and flood limits are
refused as Telegram and the API server refuse them), so the test suite and `opsgate demo` can run
the real product against them. Nothing in the product's own code paths imports this package.
"""
