"""The CLI's verbs, one module per area; `gluon_yolo3/cli.py` assembles them into the `gluon-yolo3` app.

    train.py      train                         evaluate.py   eval
    predict.py    predict                       components.py components
    data.py       data check, anchors           deploy.py     export, quantize, pack
    interop.py    import-darknet, export-darknet, import-gluoncv
    benchmark.py  benchmark                     launch.py     launch
    common.py     shared options, the error handler (`cli_errors`: known errors -> message, exit code 2)
"""
