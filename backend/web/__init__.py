"""Server-rendered pages (Jinja2 templates in ``frontend/``) on top of the backend services.

``backend.web.router.mount_web(app)`` adds the page routes, the static files, the HTML error
pages and the sqladmin CRUD views to the API application.
"""
