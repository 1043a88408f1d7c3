"""gunicorn settings for `make run` (and `make bench`): gthread workers, the dispatcher in each worker."""
import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
wsgi_app = "app:serve()"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("THREADS", "8"))
accesslog = None  # Postback logs requests itself, without query strings (the pixel's carries an email)
keepalive = 5


def post_worker_init(worker):
    """Every worker runs the scheduler; only the one holding the lock beside the database drains."""
    from dispatch import Dispatcher, lock_path_for

    app = worker.wsgi
    config = app.config["POSTBACK"]
    Dispatcher(lambda: app.config["POSTBACK"]).start(lock_path_for(config.database))
