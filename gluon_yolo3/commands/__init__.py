"""CLI verbs beyond the core four, one module per area; each adds commands to `gluon_yolo3.cli.app`.

    from gluon_yolo3.cli import app, SET_HELP, fail, KNOWN_ERRORS

    @app.command("import-darknet")
    def import_darknet(...): ...

Every module here is imported when the CLI starts; keep heavy imports inside the command functions.
"""
