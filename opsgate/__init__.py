"""opsgate. Importing it first makes kubernetes-asyncio's client load its classes on first use,
and keeps extras opsgate never uses from loading (unused_extras).

That must happen before anything imports ``kubernetes_asyncio``, ``telegram`` or ``httpx``, and
every entry point (the CLI, the tests, the benches) imports a module of this package first: see
lazy_kube_client.
"""

from opsgate import lazy_kube_client, unused_extras

lazy_kube_client.install()
unused_extras.install()
