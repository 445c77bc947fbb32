"""Recipes: `_base_` inheritance, deep merge, `--set` overrides, validation and the resolved YAML."""
import copy
from pathlib import Path

import pytest
import yaml

from gluon_yolo3.recipe import DEFAULTS, RecipeError, apply_override, load_recipe, merge, resolved_yaml



def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---- inheritance -------------------------------------------------------------------------------------

def test_single_base_as_string_relative_to_recipe_folder(tmp_path, elsewhere):
    write(tmp_path / "recipes/_base_/a.yaml", "train: {lr: 0.05, epochs: 3}\n")
    child = write(tmp_path / "recipes/exp/child.yaml", "_base_: ../_base_/a.yaml\ntrain: {epochs: 7}\n")
    recipe = load_recipe(child)
    assert recipe["train"]["lr"] == 0.05
    assert recipe["train"]["epochs"] == 7
    assert "_base_" not in recipe


def test_list_of_bases_merged_in_order(tmp_path, elsewhere):
    write(tmp_path / "a.yaml", "train: {lr: 0.1, epochs: 2}\nname: from_a\n")
    write(tmp_path / "b.yaml", "train: {lr: 0.2}\neval: {metric: voc}\n")
    child = write(tmp_path / "child.yaml", "_base_: [a.yaml, b.yaml]\n")
    recipe = load_recipe(child)
    assert recipe["train"]["lr"] == 0.2            # the later base wins
    assert recipe["train"]["epochs"] == 2          # ... but keeps what only the earlier one set
    assert recipe["eval"]["metric"] == "voc"
    assert recipe["name"] == "from_a"


def test_nested_bases_each_relative_to_its_own_file(tmp_path, elsewhere):
    write(tmp_path / "root/deep/grand.yaml", "train: {lr: 0.3, epochs: 4, seed: 9}\n")
    write(tmp_path / "root/mid/parent.yaml", "_base_: ../deep/grand.yaml\ntrain: {epochs: 5}\n")
    child = write(tmp_path / "root/child.yaml", "_base_: mid/parent.yaml\ntrain: {seed: 1}\n")
    train = load_recipe(child)["train"]
    assert (train["lr"], train["epochs"], train["seed"]) == (0.3, 5, 1)


def test_deep_merge_keeps_base_siblings(tmp_path):
    write(tmp_path / "base.yaml",
          "model:\n  input_size: 320\n  nms: {type: class_aware, iou_thresh: 0.3, topk: 50}\n"
          "data:\n  train: {type: synthetic, num_images: 40, clutter: false}\n")
    child = write(tmp_path / "child.yaml",
                  "_base_: base.yaml\nmodel:\n  nms: {iou_thresh: 0.6}\ndata:\n  train: {num_images: 12}\n")
    recipe = load_recipe(child)
    assert recipe["model"]["input_size"] == 320
    assert recipe["model"]["nms"]["iou_thresh"] == 0.6
    assert recipe["model"]["nms"]["topk"] == 50
    assert recipe["model"]["nms"]["max_det"] == DEFAULTS["model"]["nms"]["max_det"]
    assert recipe["data"]["train"] == {"type": "synthetic", "split": "train", "num_images": 12,
                                       "clutter": False}


def test_lists_replace(tmp_path):
    write(tmp_path / "base.yaml", "data:\n  transforms: [{type: random_flip}, {type: color_jitter}]\n"
                                  "model:\n  anchors: [[[1, 2]], [[3, 4]], [[5, 6]]]\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\ndata:\n  transforms: [{type: random_expand}]\n"
                                           "model:\n  anchors: [[[7, 8]]]\n")
    recipe = load_recipe(child)
    assert recipe["data"]["transforms"] == [{"type": "random_expand"}]
    assert recipe["model"]["anchors"] == [[[7, 8]]]


def test_replace_marker_replaces_a_dict_whole(tmp_path):
    write(tmp_path / "base.yaml", "data:\n  train: {type: synthetic, num_images: 40, clutter: false, seed: 3}\n")
    child = write(tmp_path / "child.yaml",
                  "_base_: base.yaml\ndata:\n  train: {_replace_: true, type: synthetic, num_images: 5}\n")
    train = load_recipe(child)["data"]["train"]
    assert train["num_images"] == 5
    assert "clutter" not in train and "seed" not in train      # the base's keys are gone
    assert "_replace_" not in train                             # the marker never reaches a constructor


def test_replace_marker_is_stripped_everywhere(tmp_path):
    child = write(tmp_path / "r.yaml",
                  "loss:\n  terms:\n    - {_replace_: true, type: xy_bce}\n"
                  "model:\n  norm: {_replace_: true, type: batchnorm, momentum: 0.5}\n")
    recipe = load_recipe(child)
    assert "_replace_" not in resolved_yaml(recipe)
    assert recipe["loss"]["terms"] == [{"type": "xy_bce"}]


def test_defaults_are_filled_in_after_replace(tmp_path):
    child = write(tmp_path / "r.yaml", "eval: {_replace_: true, metric: voc}\n")
    recipe = load_recipe(child)
    assert recipe["eval"] == {**DEFAULTS["eval"], "metric": "voc"}


def test_inheritance_loop_is_detected(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: [c.yaml]\n")
    write(tmp_path / "c.yaml", "_base_: a.yaml\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "a.yaml")
    msg = str(info.value)
    assert "inheritance loops" in msg
    assert msg.index("a.yaml") < msg.index("b.yaml") < msg.index("c.yaml") < msg.rindex("a.yaml")


def test_self_inheritance_is_a_loop(tmp_path):
    write(tmp_path / "me.yaml", "_base_: me.yaml\n")
    with pytest.raises(RecipeError, match="inheritance loops"):
        load_recipe(tmp_path / "me.yaml")


def test_shared_base_twice_is_not_a_loop(tmp_path):
    write(tmp_path / "common.yaml", "train: {seed: 5}\n")
    write(tmp_path / "a.yaml", "_base_: common.yaml\ntrain: {lr: 0.2}\n")
    write(tmp_path / "b.yaml", "_base_: common.yaml\ntrain: {epochs: 3}\n")
    child = write(tmp_path / "child.yaml", "_base_: [a.yaml, b.yaml]\n")
    train = load_recipe(child)["train"]
    assert (train["seed"], train["lr"], train["epochs"]) == (5, 0.2, 3)


def test_missing_base_is_named(tmp_path, elsewhere):
    child = write(tmp_path / "sub/child.yaml", "_base_: [../nowhere/base.yaml]\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(child)
    msg = str(info.value)
    assert "'../nowhere/base.yaml' not found" in msg
    assert str(child) in msg
    assert str(tmp_path / "nowhere/base.yaml") in msg     # where it looked


def test_plugin_paths_resolve_relative_to_the_recipe_naming_them(tmp_path, elsewhere):
    write(tmp_path / "lib/plugins/p.py", "")
    write(tmp_path / "lib/base.yaml", "plugins: [plugins/p.py, some.module]\n")
    child = write(tmp_path / "exp/child.yaml", "_base_: ../lib/base.yaml\n")
    plugins = load_recipe(child)["plugins"]
    assert plugins == [str(tmp_path / "lib/plugins/p.py"), "some.module"]


def test_shipped_demo_recipes_resolve(recipes, repo):
    tiny = load_recipe(recipes / "demo_tiny.yaml")
    assert tiny["name"] == "demo_tiny"
    assert tiny["model"]["backbone"] == {"type": "darknet_tiny", "width": 0.5}
    assert tiny["model"]["input_size"] == 128                         # child beats _base_/tiny.yaml's 416
    assert tiny["data"]["train"]["num_images"] == 6000                # the child's, over the base's 2000
    assert tiny["data"]["train"]["image_size"] == 128                 # from _base_/synthetic.yaml
    assert tiny["data"]["train"]["split"] == "train"                  # from DEFAULTS
    assert len(tiny["model"]["anchors"]) == 2                         # lists replace DEFAULTS' 3 scales
    focal = load_recipe(recipes / "demo_tiny_focal.yaml")
    assert focal["plugins"] == [str(repo / "plugins/focal_objectness.py")]
    assert [t["type"] for t in focal["loss"]["terms"]] == ["xy_bce", "wh_l1", "focal_objectness", "class_bce"]
    assert focal["train"] == tiny["train"] and focal["train"]["lr"] != DEFAULTS["train"]["lr"]   # inherited


# ---- overrides -----------------------------------------------------------------------------------------

def test_overrides_are_parsed_as_yaml(recipes):
    recipe = load_recipe(recipes / "demo_tiny_focal.yaml", [
        "train.lr=0.05",
        "train.devices=[cpu:0, cpu:1]",
        "train.hybridize=false",
        "model.nms.iou_thresh=0.6",
        "data.train.num_images=16",
        "loss.terms.0.weight=2",
        "loss.terms.-1.weight=0.5",
        "name=renamed",
        "data.classes=[circle, square]",
    ])
    assert recipe["train"]["lr"] == 0.05 and isinstance(recipe["train"]["lr"], float)
    assert recipe["train"]["devices"] == ["cpu:0", "cpu:1"]
    assert recipe["train"]["hybridize"] is False
    assert recipe["model"]["nms"]["iou_thresh"] == 0.6
    assert recipe["model"]["nms"]["topk"] == 400                     # siblings untouched
    assert recipe["data"]["train"]["num_images"] == 16
    assert recipe["data"]["train"]["image_size"] == 128
    assert recipe["loss"]["terms"][0] == {"type": "xy_bce", "weight": 2}
    assert recipe["loss"]["terms"][3] == {"type": "class_bce", "weight": 0.5}
    assert recipe["loss"]["terms"][2]["type"] == "focal_objectness"
    assert recipe["name"] == "renamed"
    assert recipe["data"]["classes"] == ["circle", "square"]


def test_override_value_with_equals_sign_and_mapping(recipes):
    recipe = load_recipe(recipes / "demo_tiny.yaml", ["name=a=b", "train.lr_schedule={type: warmup_step}"])
    assert recipe["name"] == "a=b"
    assert recipe["train"]["lr_schedule"]["type"] == "warmup_step"


def test_later_override_wins(recipes):
    recipe = load_recipe(recipes / "demo_tiny.yaml", ["train.epochs=2", "train.epochs=3"])
    assert recipe["train"]["epochs"] == 3


def test_override_of_key_the_file_does_not_set_merges_with_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path / "empty.yaml", ""), ["train.lr=0.2", "model.nms.topk=7"])
    assert recipe["train"]["lr"] == 0.2
    assert recipe["train"]["epochs"] == DEFAULTS["train"]["epochs"]
    assert recipe["model"]["nms"] == {**DEFAULTS["model"]["nms"], "topk": 7}


def test_list_index_override_of_an_inherited_default_list(recipes):
    recipe = load_recipe(recipes / "demo_tiny.yaml", ["loss.terms.0.weight=2"])
    terms = recipe["loss"]["terms"]
    assert isinstance(terms, list)
    assert terms[0] == {"type": "xy_bce", "weight": 2}
    assert [t["type"] for t in terms] == [t["type"] for t in DEFAULTS["loss"]["terms"]]


def test_override_in_exponent_notation_is_a_float(recipes):
    recipe = load_recipe(recipes / "demo_tiny.yaml", ["train.lr=1e-3", "train.optimizer.wd=5e-4"])
    assert recipe["train"]["lr"] == pytest.approx(0.001)
    assert recipe["train"]["optimizer"]["wd"] == pytest.approx(0.0005)


def test_override_of_unknown_key_names_path_and_suggests(recipes):
    with pytest.raises(RecipeError) as info:
        load_recipe(recipes / "demo_tiny.yaml", ["train.lrr=0.1"])
    msg = str(info.value)
    assert "--set train.lrr" in msg
    assert "unknown key 'train.lrr'" in msg
    assert "did you mean 'train.lr'?" in msg


def test_override_of_unknown_top_level_key(recipes):
    with pytest.raises(RecipeError, match=r"unknown key 'trian' \(did you mean 'train'\?\)"):
        load_recipe(recipes / "demo_tiny.yaml", ["trian.lr=0.1"])


def test_override_inside_a_component_is_not_schema_checked(recipes):
    recipe = load_recipe(recipes / "demo_tiny.yaml", ["data.train.max_objects=2"])
    assert recipe["data"]["train"]["max_objects"] == 2


@pytest.mark.parametrize("item, pattern", [
    ("train.lr", "must look like key.path=value"),
    ("train.lr=[1, 2", "not valid YAML"),
    ("loss.terms.9.weight=2", "'9' is not an index of a list of 4"),
    ("loss.terms.x.weight=2", "'x' is not an index"),
])
def test_bad_overrides(item, pattern, recipes):
    with pytest.raises(RecipeError, match=pattern):
        load_recipe(recipes / "demo_tiny_focal.yaml", [item])


def test_apply_override_in_place():
    recipe = {"train": {"lr": 0.1}}
    apply_override(recipe, "train.epochs=4")
    assert recipe == {"train": {"lr": 0.1, "epochs": 4}}


# ---- validation and file errors ---------------------------------------------------------------------

def test_misspelled_key_deep_in_recipe(tmp_path, recipes):
    path = write(tmp_path / "bad.yaml", "_base_: " + str(recipes / "demo_tiny.yaml") + "\ntrain:\n  lrr: 0.1\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert "unknown key 'train.lrr'" in msg
    assert "did you mean 'train.lr'?" in msg
    assert str(path) in msg
    assert "valid keys here:" in msg and "batch_size" in msg


def test_misspelled_key_in_a_base_is_caught(tmp_path):
    write(tmp_path / "base.yaml", "eval: {metrc: voc}\n")
    with pytest.raises(RecipeError, match=r"unknown key 'eval.metrc' \(did you mean 'eval.metric'\?\)"):
        load_recipe(write(tmp_path / "child.yaml", "_base_: base.yaml\n"))


def test_section_must_be_a_mapping(tmp_path):
    with pytest.raises(RecipeError, match="'train' must be a mapping, got 5"):
        load_recipe(write(tmp_path / "r.yaml", "train: 5\n"))


def test_component_must_be_a_config(tmp_path):
    with pytest.raises(RecipeError, match="'model.backbone' must be a component config"):
        load_recipe(write(tmp_path / "r.yaml", "model: {backbone: [1, 2]}\n"))
    # a bare string is accepted as a type name
    assert load_recipe(write(tmp_path / "s.yaml", "model: {nms: class_aware}\n"))["model"]["nms"] == "class_aware"


def test_keys_inside_component_configs_are_open(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.yaml", "model:\n  backbone: {type: darknet_tiny, width: 0.25}\n"))
    assert recipe["model"]["backbone"] == {"type": "darknet_tiny", "width": 0.25}


@pytest.mark.parametrize("text, pattern", [
    ("- a\n- b\n", "must be a mapping at the top level, got list"),
    ("just a string\n", "must be a mapping at the top level, got str"),
    ("train: {lr: [0.1\n", "not valid YAML"),
])
def test_bad_files_are_named(tmp_path, text, pattern):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert pattern in str(info.value)
    assert str(path) in str(info.value)


def test_bad_base_file_is_named(tmp_path):
    write(tmp_path / "base.yaml", "[1, 2]\n")
    with pytest.raises(RecipeError, match=r"base\.yaml: a recipe must be a mapping"):
        load_recipe(write(tmp_path / "child.yaml", "_base_: base.yaml\n"))


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert f"cannot read recipe {path}" in str(info.value)
    assert isinstance(info.value, ValueError)


# ---- defaults and the resolved YAML ------------------------------------------------------------------

def test_empty_recipe_is_all_defaults(tmp_path):
    path = write(tmp_path / "blank.yaml", "# nothing\n")
    recipe = load_recipe(path)
    assert recipe["_file_"] == str(path.resolve())
    assert recipe["name"] == "blank"
    rest = {k: v for k, v in recipe.items() if k not in ("_file_", "name")}
    assert rest == {k: v for k, v in DEFAULTS.items() if k != "name"}


def test_defaults_are_filled_in(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.yaml", "name: mine\ntrain: {lr: 0.2}\n"))
    assert recipe["name"] == "mine"
    assert recipe["train"] == {**DEFAULTS["train"], "lr": 0.2}
    assert recipe["eval"] == DEFAULTS["eval"]
    assert recipe["loss"]["terms"] == DEFAULTS["loss"]["terms"]


def test_loading_never_modifies_defaults(tmp_path, recipes):
    before = copy.deepcopy(DEFAULTS)
    recipe = load_recipe(recipes / "demo_tiny_focal.yaml", ["train.lr=0.3", "model.nms.topk=3"])
    recipe["train"]["devices"].append("cpu:9")
    recipe["loss"]["terms"][0]["weight"] = 99
    load_recipe(write(tmp_path / "r.yaml", "train: {lr: 0.4}\n"), ["model.nms.iou_thresh=0.1"])["eval"]["x"] = 1
    assert DEFAULTS == before


def test_merge_leaves_inputs_intact():
    base = {"a": {"b": 1, "c": [1]}, "k": 0}
    update = {"a": {"b": 2, "f": {"g": 1}}, "d": {"e": 3}}
    out = merge(base, update)
    assert out == {"a": {"b": 2, "c": [1], "f": {"g": 1}}, "k": 0, "d": {"e": 3}}
    assert base == {"a": {"b": 1, "c": [1]}, "k": 0}
    out["d"]["e"] = 4
    out["a"]["f"]["g"] = 5
    out["a"]["b"] = 6
    assert update == {"a": {"b": 2, "f": {"g": 1}}, "d": {"e": 3}}   # values from update are copies
    assert base == {"a": {"b": 1, "c": [1]}, "k": 0}


@pytest.mark.parametrize("overrides", [[], ["train.lr=0.03", "loss.terms.2.gamma=1.5", "data.classes=[circle]"]])
def test_resolved_yaml_round_trips(tmp_path, overrides, recipes):
    recipe = load_recipe(recipes / "demo_tiny_focal.yaml", overrides)
    text = resolved_yaml(recipe)
    data = yaml.safe_load(text)
    assert "_base_" not in data and "_file_" not in data
    standalone = write(tmp_path / "elsewhere/resolved.yaml", text)
    again = load_recipe(standalone)
    assert again["_file_"] == str(standalone)
    assert {k: v for k, v in again.items() if k != "_file_"} == {k: v for k, v in recipe.items() if k != "_file_"}
    assert resolved_yaml(again) == text


def test_resolved_yaml_round_trips_with_replace(tmp_path, recipes):
    path = write(tmp_path / "r.yaml", "_base_: " + str(recipes / "demo_tiny.yaml") + "\n"
                 "model:\n  nms: {_replace_: true, type: class_aware, iou_thresh: 0.5}\n")
    recipe = load_recipe(path)
    again = load_recipe(write(tmp_path / "resolved.yaml", resolved_yaml(recipe)))
    assert again["model"]["nms"] == recipe["model"]["nms"]


def test_override_of_a_component_type_starts_a_fresh_component(recipes):
    recipe = load_recipe(recipes / "demo_tiny.yaml", ["data.train.type=voc", "data.train.root=/data/VOC"])
    assert recipe["data"]["train"] == {"type": "voc", "root": "/data/VOC"}   # no synthetic keys left
    same = load_recipe(recipes / "demo_tiny.yaml", ["data.train.type=synthetic"])
    assert same["data"]["train"]["num_images"] == 6000                      # same type: keys kept
