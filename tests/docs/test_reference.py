"""The generated references: made from the code, they hold every recipe key and registry entry, and a key or entry
without its description fails here (and stops `mkdocs build`)."""
import pytest

from gluon_yolo3 import schema
from gluon_yolo3.registry import ALL, LOSSES, NMS


def test_every_key_entry_and_recipe_is_documented(reference):
    assert reference.problems() == []


def test_a_new_key_without_a_description_is_named(reference, monkeypatch):
    monkeypatch.setitem(schema.DEFAULTS["train"], "new_knob", 3)
    monkeypatch.setitem(schema.DESCRIPTIONS, "train.gone", "a key that was removed")
    found = reference.problems()
    assert any("'train.new_knob' has no description" in p for p in found), found
    assert any("'train.gone'" in p and "not a key" in p for p in found), found


def test_a_new_entry_without_a_docstring_is_named(reference, monkeypatch):
    class Undocumented:
        def __init__(self, p: float = 0.5):
            pass

    monkeypatch.setitem(LOSSES._entries, "undocumented_term", Undocumented)
    assert any("LOSSES entry 'undocumented_term'" in p for p in reference.problems())


def test_recipe_keys_table_has_every_key_with_type_default_rule_and_description(reference):
    text = reference.recipe_keys()
    rows = {line.split("|")[1].strip(" `"): line for line in text.splitlines() if line.startswith("| `")}
    assert set(rows) == {path for path, _ in schema.keys()}
    assert rows["train.lr"] == ("| `train.lr` | number | `0.001` | a number > 0 | "
                                "The base learning rate; the schedule scales it. |")
    assert rows["train.val_every"].split(" | ")[1:4] == ["integer", "`1`", "auto or an integer >= 0"]
    assert rows["train.hybridize"].split(" | ")[1:4] == ["boolean", "`true`", "true or false"]
    # a null default: the rule says what else it takes
    assert "a path to a Darknet .cfg file, or null" in rows["train.init_cfg"]
    # a component: its registry is linked to the component reference
    assert rows["model.backbone"].split(" | ")[1:3] == ["component", "`{type: darknet53}`"]
    assert "[BACKBONES](components.md#backbones)" in rows["model.backbone"]
    # a key added to the schema appears without a change here
    assert "`train.init_from`" in text and "### data { #keys-data }" in text


def test_components_reference_has_every_entry_with_its_call_and_docstring(reference):
    text = reference.components()
    for name, registry in ALL.items():
        assert f"## {name} {{ #{name.lower()} }}" in text
        for entry in registry.names():
            assert f"### `{entry}`" in text, (name, entry)
    assert ("`soft_nms(score_thresh: float = 0.01, iou_thresh: float = 0.45, topk: int = 400, max_det: int = 100, "
            "method: str = 'linear', sigma: float = 0.5)`") in text
    assert "Soft-NMS (Bodla et al. 2017)" in text
    assert NMS.get("multi_label") is NMS.get("class_aware")
    assert "Another name for [`class_aware`](#nms-class_aware)." in text
    assert "`training_plot()`" in text                        # a hook without arguments
    assert "Recipe keys: `data.train`, `data.val`." in text    # where DATASETS entries go
    # the example plugins, in a section of their own, named with their file
    plugins = text[text.index("## Example plugins"):]
    assert "### `focal_objectness` (LOSSES, `plugins/focal_objectness.py`)" in plugins
    assert "`strided_tiny(norm=None, width: float = 1.0)`" in plugins


def test_recipes_table_has_every_recipe(reference, repo):
    text = reference.recipes()
    for path in sorted(repo.glob("recipes/**/*.yaml")):
        assert f"| `{path.relative_to(repo / 'recipes')}` |" in text
    assert "| `demo_tiny.yaml` | The demo: a thin yolov3-tiny trained from scratch on synthetic shapes" in text


def test_pages_ask_for_the_references_and_unknown_ones_fail(reference, repo):
    assert "<!-- reference: recipe-keys -->" in (repo / "docs/recipes.md").read_text()
    assert "<!-- reference: recipes -->" in (repo / "docs/recipes.md").read_text()
    assert "<!-- reference: components -->" in (repo / "docs/components.md").read_text()
    assert reference.render("a\n<!-- reference: recipes -->\nb").startswith("a\n| recipe | what it is |")
    with pytest.raises(ValueError, match="unknown reference 'keys'"):
        reference.render("<!-- reference: keys -->", where="x.md")
