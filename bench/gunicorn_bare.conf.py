"""gunicorn settings for `make bench`'s baseline: every setting of gunicorn.conf.py (what `make run` uses)
— worker class, workers, threads, keepalive, bind from HOST/PORT — but the bare app and none of the
hooks (so no dispatcher)."""
import runpy
import types
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
globals().update({
    name: value for name, value in _base.items()
    if not name.startswith("_") and not callable(value) and not isinstance(value, types.ModuleType)
})
wsgi_app = "bench.bare:app"
