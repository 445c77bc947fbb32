"""Bad recipe values are named with their key and what is expected, instead of a traceback (or a run that
trains nothing): value types and ranges, anchors, input size against the backbone's strides, and misspelled
component arguments (loss terms included)."""

import pytest

from gluon_yolo3 import api
from gluon_yolo3.losses.composer import YOLOLoss
from gluon_yolo3.recipe import RecipeError, load_recipe
from gluon_yolo3.registry import ALL, Registry, RegistryError

TINY = ["data.train.num_images=16", "data.val.num_images=8", "train.batch_size=8", "train.epochs=1",
        "model.input_size=64", "data.train.image_size=64", "data.val.image_size=64", "data.num_workers=0"]
ANCHORS_EXPECTED = "model.anchors must be auto, or per scale, finest first, a list of [w, h] pairs of positive numbers"


# ---- values against the defaults' types and ranges ----------------------------------------------------

@pytest.mark.parametrize("item, message", [
    ("train.epochs=abc", "train.epochs must be an integer >= 1, got 'abc'"),
    ("train.epochs=null", "train.epochs must be an integer >= 1, got null"),
    ("train.epochs=-3", "train.epochs must be an integer >= 1, got -3"),
    ("train.epochs=2.5", "train.epochs must be an integer >= 1, got 2.5"),
    ("train.epochs=true", "train.epochs must be an integer >= 1, got true"),
    ("model.input_size=abc", "model.input_size must be an integer >= 32, got 'abc'"),
    ("model.input_size=16", "model.input_size must be an integer >= 32, got 16"),
    ("train.batch_size=0", "train.batch_size must be an integer >= 1, got 0"),
    ("train.lr=0", "train.lr must be a number > 0, got 0"),
    ("train.lr=abc", "train.lr must be a number > 0, got 'abc'"),
    ("train.lr=.nan", "train.lr must be a number > 0, got nan"),
    ("train.hybridize=1", "train.hybridize must be true or false, got 1"),
    ("train.no_bias_decay=null", "train.no_bias_decay must be true or false, got null"),
    ("train.seed=abc", "train.seed must be an integer in [0, 4294967295], got 'abc'"),
    ("train.seed=-1", "train.seed must be an integer in [0, 4294967295], got -1"),
    ("train.val_every=-1", "train.val_every must be auto or an integer >= 0, got -1"),
    ("train.checkpoint_every=0", "train.checkpoint_every must be auto or an integer >= 1, got 0"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints must be an integer >= 1, got 0"),
    ("train.log_every=0", "train.log_every must be an integer >= 1, got 0"),
    ("train.clip_grad_norm=abc", "train.clip_grad_norm must be a number, got 'abc'"),
    ("train.dist_timeout=-5", "train.dist_timeout must be a number >= 0, got -5"),
    ("train.devices=5", "train.devices must be a list of devices like [cpu:0, cpu:1]"),
    ("train.kvstore=null", "train.kvstore must be a kvstore name"),
    ("data.num_workers=-1", "data.num_workers must be an integer >= 0, got -1"),
    ("data.max_boxes=0", "data.max_boxes must be an integer >= 1, got 0"),
    ("data.resize=crop", "data.resize must be 'letterbox' or 'resize', got 'crop'"),
    ("data.mean=[0.5, 0.5]", "data.mean must be a list of 3 numbers"),
    ("data.mean=0.5", "data.mean must be a list of 3 numbers"),
    ("data.std=[0.2, 0, 0.2]", "data.std must be a list of 3 positive numbers"),
    ("data.classes=[cat, 7]", "data.classes must be a list of distinct class names"),
    ("data.transforms=[5]", "data.transforms must be a list of component configs"),
    ("data.multi_scale.min_size=abc", "data.multi_scale.min_size must be an integer >= 32, got 'abc'"),
    ("data.multi_scale.every=0", "data.multi_scale.every must be an integer >= 1, got 0"),
    ("loss.ignore_iou=1.5", "loss.ignore_iou must be a number in [0, 1], got 1.5"),
    ("loss.terms=[]", "loss.terms must be a list of component configs"),
    ("eval.iou_thresh=0", "eval.iou_thresh must be a number in (0, 1], got 0"),
    ("eval.batch_size=0", "eval.batch_size must be an integer >= 1, got 0"),
    ("eval.metric=5", "eval.metric must be a metric name"),
    ("predict.score_thresh=2", "predict.score_thresh must be a number in [0, 1], got 2"),
    ("name=[a, b]", "name must be a non-empty string"),
    ("plugins=[5]", "plugins must be a list of plugin files"),
])
def test_bad_override_value_names_key_and_expectation(item, message, demo_recipe):
    with pytest.raises(RecipeError) as info:
        load_recipe(demo_recipe, [item])
    assert message in str(info.value)


def test_bad_value_in_a_recipe_file_names_the_file(tmp_path, demo_recipe):
    path = tmp_path / "r.yaml"
    path.write_text(f"_base_: {demo_recipe}\ntrain:\n  epochs: 0\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(path) in str(info.value)
    assert "train.epochs must be an integer >= 1, got 0" in str(info.value)


@pytest.mark.parametrize("item", [
    "train.lr=1",                    # an integer where a number is expected
    "loss.ignore_iou=1",
    "predict.score_thresh=0",
    "train.val_every=0",             # 0 disables validation
    "train.clip_grad_norm=0",
    "train.dist_timeout=0",
    "data.num_workers=0",
    "train.devices=cpu:0,cpu:1",     # a comma-separated string, as --devices
    "data.classes=null",             # the nullable keys
    "data.classes=[cat, dog]",
    "name=null",
    "train.ema=null",
    "train.amp=null",
    "data.multi_scale={min_size: null, max_size: null}",
    "data.multi_scale={min_size: 320, max_size: 608}",
    "data.transforms=[{type: mosaic}, random_flip]",
    "model.backbone.anything=1",     # component arguments stay open (the registry checks them)
])
def test_good_values_are_accepted(item, demo_recipe):
    load_recipe(demo_recipe, [item])


def test_every_shipped_recipe_still_loads(repo):
    paths = sorted((repo / "recipes").glob("*.yaml")) + [repo / "zoo" / "bccd_tiny" / "recipe.yaml"]
    for path in paths:
        api.load(path)


# ---- anchors and the input size against the backbone ---------------------------------------------------

@pytest.mark.parametrize("anchors", [
    "[[1, 2], [3]]",                         # no scale level
    "[[[10, 13], [3]]]",                     # a pair of one number
    "[[[10, 13, 5]]]",                       # three numbers
    "[[[10, abc]], [[30, 61]]]",             # not a number
    "[[[10, -13]], [[30, 61]]]",             # a negative size
    "[[[10, 0]], [[30, 61]]]",
    "[[], [[30, 61]]]",                      # an empty group
    "[]",
    "12",
])
def test_malformed_anchors_are_named(anchors, demo_recipe):
    with pytest.raises(RecipeError) as info:
        load_recipe(demo_recipe, [f"model.anchors={anchors}"])
    assert ANCHORS_EXPECTED in str(info.value)


def test_input_size_must_be_a_multiple_of_the_largest_stride(demo_recipe):
    recipe = api.load(demo_recipe, ["model.input_size=100"])
    with pytest.raises(RecipeError, match=r"model.input_size 100 is not a multiple of the backbone's largest "
                                          r"stride 32 \(darknet_tiny\)"):
        api.build(recipe, 3)


def test_input_size_check_names_a_backbone_given_as_a_bare_type(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: {input_size: 400, backbone: darknet53}\n")
    with pytest.raises(RecipeError, match=r"model.input_size 400 is not a multiple of the backbone's largest "
                                          r"stride 32 \(darknet53\)"):
        api.build(api.load(path), 3)


# ---- misspelled component arguments --------------------------------------------------------------------

def test_misspelled_loss_term_key_suggests_weight_and_names_the_term():
    with pytest.raises(RegistryError) as info:
        YOLOLoss([{"type": "xy_bce"}, {"type": "wh_l1", "wieght": 2.0}], anchors=[[[8, 8]]], strides=[8])
    msg = str(info.value)
    assert "loss.terms.1: LOSSES: 'wh_l1' takes no argument 'wieght' (did you mean 'weight'?)" in msg
    assert "prefix" not in msg and "params" not in msg


def test_misspelled_loss_term_name_is_suggested():
    with pytest.raises(RegistryError, match=r"loss.terms.0: .*'nmae' \(did you mean 'name'\?\)"):
        YOLOLoss([{"type": "objectness_bce", "nmae": "obj"}], anchors=[[[8, 8]]], strides=[8])


def test_loss_terms_keep_weight_name_and_arguments():
    loss = YOLOLoss([{"type": "objectness_bce", "weight": 2, "name": "obj", "noobj_weight": 0.5}, "class_bce"],
                    anchors=[[[8, 8]]], strides=[8])
    assert loss.weights == [2.0, 1.0]
    assert loss.names[0] == "obj" and len(loss.names) == 2
    assert loss.terms[0].noobj_weight == 0.5


def test_loss_term_weight_must_be_a_number():
    with pytest.raises(RecipeError, match=r"loss.terms.0.weight must be a number, got 'abc'"):
        YOLOLoss([{"type": "xy_bce", "weight": "abc"}], anchors=[[[8, 8]]], strides=[8])


def test_no_registry_lists_gluon_internals_as_arguments():
    checked = 0
    for registry in ALL.values():
        for name in registry.names():
            try:
                registry.build({"type": name, "zzz_unknown": 1})
            except RegistryError as err:
                accepted = str(err).split("it accepts:")[-1]
                assert "prefix" not in accepted and "params" not in accepted, f"{registry.name}.{name}: {err}"
                checked += 1
            except Exception:   # noqa: BLE001 - an open-ended entry got past the check
                pass
    assert checked > 20


def test_gluon_internals_are_still_accepted():
    backbone = ALL["BACKBONES"].build({"type": "darknet_tiny", "width": 0.25, "prefix": "bb_"})
    assert backbone.prefix == "bb_"


def test_registry_own_keys_are_valid_suggested_and_not_passed_on():
    reg = Registry("WIDGETS")

    @reg.register("gadget")
    class Gadget:
        def __init__(self, size: int = 1):
            self.size = size

    assert reg.build({"type": "gadget", "size": 2, "weight": 3}, own_keys=("weight",)).size == 2
    with pytest.raises(RegistryError) as info:
        reg.build({"type": "gadget", "wieght": 3}, where="things.0", own_keys=("weight",))
    assert str(info.value) == ("things.0: WIDGETS: 'gadget' takes no argument 'wieght' (did you mean 'weight'?); "
                               "it accepts: weight, size")
    with pytest.raises(RegistryError, match=r"^things.1: WIDGETS: unknown type 'gadgte'"):
        reg.build({"type": "gadgte"}, where="things.1")


def test_model_component_errors_name_their_key(demo_recipe):
    recipe = api.load(demo_recipe, ["model.neck.widht=0.5"])
    with pytest.raises(RegistryError, match=r"^model.neck: NECKS: 'yolov3_tiny' takes no argument 'widht' "
                                            r"\(did you mean 'width'\?\)"):
        api.build(recipe, 3)


# ---- the command line: exit 2 and the key, no traceback ----------------------------------------------

@pytest.mark.parametrize("item, message", [
    ("train.epochs=abc", "train.epochs must be an integer >= 1, got 'abc'"),
    ("train.epochs=null", "train.epochs must be an integer >= 1, got null"),
    ("train.epochs=-3", "train.epochs must be an integer >= 1, got -3"),
    ("model.input_size=abc", "model.input_size must be an integer >= 32, got 'abc'"),
    ("model.input_size=100", "model.input_size 100 is not a multiple of the backbone's largest stride 32"),
    ("model.anchors=[[1, 2], [3]]", ANCHORS_EXPECTED),
    ("loss.terms.0.wieght=2", "loss.terms.0: LOSSES: 'xy_bce' takes no argument 'wieght' "
                              "(did you mean 'weight'?)"),
])
def test_cli_bad_values_exit_2_with_the_key(tmp_path, item, message, demo_recipe, invoke, sets):
    result = invoke("train", demo_recipe, "--workdir", tmp_path / "w", "--no-progress", *sets(TINY + [item]))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert "prefix" not in result.output
