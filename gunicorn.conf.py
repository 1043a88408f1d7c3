"""gunicorn settings for `make run` (and `make bench`): gthread workers, the dispatcher in each worker."""
import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
wsgi_app = "app:serve()"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("THREADS", "8"))
accesslog = os.environ.get("ACCESS_LOG", "-")
# Path without the query string (the pixel's `params` carries an email) and no client IP: no personal data.
access_log_format = '"%(m)s %(U)s" %(s)s %(B)s %(M)sms'
keepalive = 5
# The pixel carries its data in the query string; gunicorn's default refuses request lines over 4 KB.
limit_request_line = 8190
# gunicorn's control socket lives at one path per user: a second instance (a bench beside `make run`) would clash.
control_socket_disable = True


def post_worker_init(worker):
    """Every worker runs the scheduler; only the one holding the lock beside the database drains."""
    from delivery.dispatcher import Dispatcher, lock_path_for

    app = worker.wsgi
    config = app.config["POSTBACK"]
    Dispatcher(lambda: app.config["POSTBACK"]).start(lock_path_for(config.database))
