"""The floor of the viewer benchmark: the smallest Flask page, served like the viewer.

`gunicorn -w 2 --chdir bench minimal_app:app`. No template, no database, no extension:
what Flask, Werkzeug and gunicorn cost for one small HTML page (bench/web.py).
"""

from flask import Flask

app = Flask(__name__)

PAGE = (
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<title>Minimal page</title></head>\n"
    "<body><h1>Minimal page</h1><p>Hello from Flask.</p></body></html>\n"
)


@app.get("/")
def index() -> str:
    return PAGE
