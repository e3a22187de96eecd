"""opsgate. Importing it first makes kubernetes-asyncio's client load its classes on first use.

That must happen before anything imports ``kubernetes_asyncio``, and every entry point (the
CLI, the tests, the benches) imports a module of this package first: see lazy_kube_client.
"""

from opsgate.lazy_kube_client import install

install()
