"""Darknet interop: yolov3, yolov3-tiny, yolov3-spp and yolov4-tiny `.cfg` and `.weights` files, read and written.

    cfg.py           cfg text: `Section`, `parse_cfg`, `parse_cfg_text`, `format_cfg`; the channel/stride
                     walk (`CfgLayer`, `walk_cfg`, `count_floats`); what a cfg describes (`describe_cfg`,
                     `is_input_normalisation`, `recipe_from_cfg`); `COCO_CLASSES`, `DarknetError`,
                     `DARKNET_BN_EPS`
    weights_file.py  the binary `.weights` format: `WeightsHeader`, `read_weights`, `write_weights`
    layout.py        gluon-yolo3's networks as Darknet layers and back: `Layout`, `darknet_layout`,
                     `check_layout`, `load_layout_weights`, `layout_arrays`, `conv_floats`
    jobs.py          the whole jobs: `read_names`, `load_darknet`, `import_darknet`, `export_darknet`

    recipe, net, info = load_darknet("yolov3.cfg", "yolov3.weights")  # a YOLOv3 HybridBlock
    import_darknet("yolov3.cfg", "yolov3.weights", "models/yolov3")   # recipe.yaml + checkpoints/best.params
    export_darknet(recipe, "runs/demo", "deploy/demo")                # demo.cfg + demo.weights + demo.names

The walk never guesses: the cfg is parsed into layers, gluon-yolo3's network is built from what the cfg
says (classes, anchors, input size, width), the same network is written back as cfg layers, and both
lists must agree layer by layer (an error names the cfg line otherwise). A weights file must hold exactly
the floats the cfg needs; OpenCV silently accepts a truncated file, this reader does not.

Nothing is re-exported here: import a name from the module that holds it.
"""
