import subprocess
import sys
from pathlib import Path

from opsgate.lazy_kube_client import reexports

REPO = Path(__file__).resolve().parents[2]


def _fresh(code: str) -> str:
    """Runs ``code`` in a new interpreter, where nothing of kubernetes_asyncio is loaded yet."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_serve_loads_only_the_kube_modules_it_uses() -> None:
    out = _fresh(
        "import sys, opsgate.cli\n"
        "names = [m for m in sys.modules if m.startswith('kubernetes_asyncio.client.models.')]\n"
        "print(len(names), 'kubernetes_asyncio.utils' in sys.modules)"
    )
    count, utils = out.split()
    assert int(count) < 20 and utils == "False"


def test_every_reexported_name_is_what_the_eager_init_binds() -> None:
    # Each package's own __init__, run as written into a scratch namespace, binds the same
    # objects under the same names as the lazy package hands out.
    out = _fresh(
        "import inspect, opsgate\n"
        "import kubernetes_asyncio, kubernetes_asyncio.client, kubernetes_asyncio.client.api\n"
        "import kubernetes_asyncio.client.models\n"
        "sizes, bad = [], []\n"
        "for p in (kubernetes_asyncio, kubernetes_asyncio.client,\n"
        "          kubernetes_asyncio.client.api, kubernetes_asyncio.client.models):\n"
        "    eager = {}\n"
        "    exec(compile(inspect.getsource(p), p.__file__, 'exec'), eager)\n"
        "    names = [n for n in eager if not n.startswith('__') and n != 'absolute_import']\n"
        "    bad += [n for n in names if getattr(p, n) is not eager[n]]\n"
        "    bad += [n for n in ('__version__', '__all__')\n"
        "            if n in eager and getattr(p, n) != eager[n]]\n"
        "    sizes.append(len(names))\n"
        "print(*sizes, len(bad))"
    )
    top, client, api, models, bad = map(int, out.split())
    assert top == 6 and client > 700 and api > 50 and models > 600
    assert bad == 0


def test_an_init_that_does_more_than_reexport_runs_as_written() -> None:
    assert reexports("from kubernetes_asyncio.client.rest import X\nX.patch = 1\n") is None
    assert reexports("import os\n") is None
    assert reexports("from kubernetes_asyncio.client.x import *\n") is None
    names, constants = reexports(  # type: ignore[misc]
        '"""doc"""\nfrom __future__ import annotations\n__version__ = "1"\n'
        "from kubernetes_asyncio.client.rest import RESTClient\n"
        "import kubernetes_asyncio.watch as watch\n"
    )
    assert names == {
        "RESTClient": ("kubernetes_asyncio.client.rest", "RESTClient"),
        "watch": ("kubernetes_asyncio.watch", None),
    }
    assert constants == {"__version__": "1"}
